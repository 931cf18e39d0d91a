"""What a rank reports at the end of a check: its payload (`collect`), and the one exchange of
payloads between ranks (`gather`).

The payload is plain, picklable Python: every site with the fingerprints of its records, and every
parameter's gradient fingerprint (with a reference run, how the gradient compares with it), under
the fully qualified names of the model the harness returned. verdicts.compute reads the payloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from placement_lint.runtime import _compat, fingerprints
from placement_lint.runtime._compat import DTensor, Replicate, placement_kind, placement_str
from placement_lint.runtime.fingerprints import _ref_stats, fingerprint
from placement_lint.runtime.site_ids import site_id

if TYPE_CHECKING:
    from placement_lint.runtime.monitor import PlacementMonitor, _Site

#: what a site record carries into the payload
RECORD_KEYS = ("grad", "fp", "fwd", "in_fp", "dtype", "grad_placements", "hits")


def module_names(model: Any) -> dict[int, str]:
    """id(module) -> its fully qualified name in `model` (the first, if it is reachable twice)."""
    names: dict[int, str] = {}
    named = getattr(model, "named_modules", None)
    if named is None:
        return names
    for name, mod in named():
        names.setdefault(id(mod), name)
    return names


@torch.no_grad()
def _param_entry(monitor: PlacementMonitor, p, ref, with_reference: bool) -> dict | None:
    """Fingerprint one parameter's gradient. Collective for Partial grads and references:
    callers run it on every rank over the same parameter list."""
    g = p.grad
    if isinstance(p, DTensor):
        entry: dict = {
            "dtensor": True,
            "placements": [placement_kind(x) for x in p.placements],
            "placement_strs": [placement_str(x) for x in p.placements],
            "mesh": monitor._mesh_info(p.device_mesh),
            "dtype": str(p.dtype).replace("torch.", ""),
            "grad": g is not None,
        }
        if g is None:
            return entry
        if isinstance(g, DTensor):
            kinds = [placement_kind(x) for x in g.placements]
            entry["grad_placements_raw"] = kinds
            if "P" in kinds:
                # torch may leave a replicated parameter's grad Partial (pending reduction);
                # compare what the optimizer would see once it is reduced
                g = g.redistribute(g.device_mesh, [Replicate() if x.is_partial() else x for x in g.placements])
            entry["grad_placements"] = [placement_kind(x) for x in g.placements]
            local = g._local_tensor
        else:
            entry["grad_placements"] = entry["placements"]
            local = g
        entry["fp"] = fingerprint(local)
        if "S" in entry["placements"]:
            # the shard's values: identical shards across ranks (DTensor random init on a CPU
            # mesh) make rank-dependent gradients coincide, and the cross-rank test blind
            entry["value"] = fingerprint(p._local_tensor)
        if with_reference:
            full = g.full_tensor() if isinstance(g, DTensor) else g
            entry["ref"] = _ref_stats(full, ref)
        return entry
    # plain parameter: replicas are the ranks holding the same values (a broadcast-initialised
    # Linear); per-rank experts hold different values and are never compared
    entry = {"dtensor": False, "placements": [], "placement_strs": [],
             "dtype": str(p.dtype).replace("torch.", ""), "grad": g is not None,
             "value": fingerprint(p)}
    if g is not None:
        entry["fp"] = fingerprint(g)
        if with_reference and ref is not None and tuple(ref.shape) == tuple(g.shape):
            entry["ref"] = _ref_stats(g, ref)
    return entry


def _records(site: _Site) -> list[dict]:
    return [{k: v for k, v in rec.items() if k in RECORD_KEYS} for rec in site.records]


def fqn_sites(monitor: PlacementMonitor, model: Any) -> dict[str, tuple[str, str]]:
    """site id -> (id, module) with the module named by its fully qualified name in `model`
    (the module the harness returned), whatever module the harness called: a site inside
    `layers.0.moe` is `layers.0.moe.router.gate` even when the harness ran
    `model.layers["0"].moe(x)`. A module outside `model` keeps its name relative to the
    outermost module that ran."""
    names = module_names(model) if model is not None else {}
    out: dict[str, tuple[str, str]] = {}
    for site in monitor.sites.values():
        module = site.module
        if site.outer is not None and id(site.outer) in names:
            prefix = names[id(site.outer)]
            module = ".".join(p for p in (prefix, module) if p)
        out[site.id] = (site_id(site.api, site.path, site.line, module, site.hook, site.local_map), module)
    return out


def collect(monitor: PlacementMonitor, model: torch.nn.Module | None = None, *,
            reference: dict | None = None) -> dict:
    """This rank's payload (plain Python, picklable). One device->host copy.

    With `reference` (param name -> full gradient from the one-rank run) this issues one
    `full_tensor()` per DTensor parameter, on every rank in the same order: call it on all
    ranks. Without it, collect() is communication-free.
    """
    fps: list[torch.Tensor] = []
    slots: list[tuple[dict, str]] = []
    for site in monitor.sites.values():
        for rec in site.records:
            for key in ("fp", "fwd", "in_fp"):
                if isinstance(rec.get(key), torch.Tensor):
                    slots.append((rec, key))
                    fps.append(rec[key].to("cpu"))
    params: dict[str, dict] = {}
    names_by_id: dict[int, str] = {}
    if model is not None:
        for name, p in model.named_parameters():
            names_by_id.setdefault(id(p), name)
            entry = _param_entry(monitor, p, reference.get(name) if reference is not None else None,
                                 reference is not None)
            if entry is None:
                continue
            for key in ("fp", "value"):
                if isinstance(entry.get(key), torch.Tensor):
                    slots.append((entry, key))
                    fps.append(entry[key].to("cpu"))
            params[name] = entry
    if fps:
        host = fingerprints._SIM.host_rows(fps) if fingerprints._SIM is not None else torch.stack(fps).tolist()
        for (holder, key), vals in zip(slots, host):
            holder[key] = vals
    final = fqn_sites(monitor, model)
    sites = []
    merged: dict[str, dict] = {}
    for site in monitor.sites.values():
        fid, fmodule = final[site.id]
        if fid in merged:
            # the same site reached through two outer modules (the harness called a submodule
            # directly, then the model): one site under its fully qualified name
            prev = merged[fid]
            prev["calls"] += site.calls
            prev["records"] += _records(site)
            prev["params"] = sorted(set(prev["params"]) | {names_by_id[i] for i in site.param_ids if i in names_by_id})
            continue
        entry = {
            "id": fid,
            "api": site.api,
            "path": site.path,
            "line": site.line,
            "function": site.function,
            "module": fmodule,
            "hook": site.hook,
            "torch_frame": site.torch_frame,
            "calls": site.calls,
            "forward": site.forward,
            "declared": site.declared,
            "effective": site.effective,
            "mesh": site.mesh,
            "dtype": site.dtype,
            "root": final[site.root.id][0] if site.root is not None else None,
            "root_effective": site.root.effective if site.root is not None else None,
            "slice_op": site.slice_op,
            "local_map": site.local_map,
            "params": sorted(names_by_id[i] for i in site.param_ids if i in names_by_id),
            "records": _records(site),
        }
        merged[fid] = entry
        sites.append(entry)
    return {
        "rank": dist.get_rank() if dist.is_initialized() else 0,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "torch": _compat.TORCH_VERSION,
        "sites": sites,
        "params": params,
        "forced_calls": monitor.forced_calls,
        "low_precision": sorted(monitor.low_precision),
    }


def gather(payload: dict) -> list[dict]:
    """The one exchange of a check: every rank's payload, on every rank.

    all_gather_object would do, but it needs numpy to decode; this is the same two collectives
    (sizes, then padded bytes) without it. On NCCL the buffers live on the current device.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [payload]
    import pickle

    world = dist.get_world_size()
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    size = torch.tensor([buf.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    n = max(int(s.item()) for s in sizes)
    padded = torch.zeros(n, dtype=torch.uint8, device=dev)
    padded[: buf.numel()] = buf
    outs = [torch.empty(n, dtype=torch.uint8, device=dev) for _ in range(world)]
    dist.all_gather(outs, padded)
    result = []
    for o, s in zip(outs, sizes):
        raw = bytes(o[: int(s.item())].cpu().tolist())
        result.append(pickle.loads(raw))
    return result
