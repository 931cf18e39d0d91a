"""PlacementMonitor: instrument every exit from (and entry into) the DTensor world.

While active, `DTensor.to_local`, `DTensor.full_tensor` and `DTensor.from_local` are wrapped.
Each call is attributed to a *site*: the first frame of user code on the stack (not torch, not
placement-lint), plus the module path and hook kind when the call runs inside a module's forward
hook (the ParallelStyle case: `PrepareModuleInputOutput`, `ColwiseParallel(use_local_output=True)`,
a project style). The returned local tensor gets a gradient hook that stores a small fingerprint
of the gradient that reaches it. Nothing in forward or backward communicates: fingerprints stay
on the device until `collect()`, which moves them to the host in one copy; the caller then runs
one `all_gather_object` (see `payload.gather`) and `verdicts.compute` decides on rank 0.

Provenance: tensors derived from a monitored local tensor (views, reshapes, arithmetic, a helper's
return value) are followed with a TorchFunctionMode, so a rank slice of any of them is recorded as
its own site at the slice's line, labelled by the local tensor it came from.

Here: the wrappers, the sites and what is recorded at each call. Elsewhere: attribution.py (which
user line and module a call belongs to), provenance.py (the TorchFunctionMode), fingerprints.py
(what a gradient is reduced to), payload.py (what `collect()` reports, and `gather`).

The monitor never changes numerics: hooks return None, fingerprints are computed under no_grad on
detached tensors, and the only behavioural switch (`force`, used by `--verify-fix`) is explicit.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Iterable

import torch
from torch.utils.weak import WeakIdKeyDictionary

from placement_lint.runtime import _compat, fingerprints, payload
from placement_lint.runtime._compat import DTensor, placement_kind, placement_str
from placement_lint.runtime.attribution import _code_of, _in_backward, _is_user_file, locate
from placement_lint.runtime.fingerprints import fingerprint
from placement_lint.runtime.provenance import _CAST_FUNCS, _LOW_DTYPES, _ProvenanceMode, _tls
from placement_lint.runtime.site_ids import module_suffix, site_id, split_site_id

_ORIG = {
    "to_local": DTensor.to_local,
    "full_tensor": DTensor.full_tensor,
    # from_local is a staticmethod: keep the underlying function, re-wrap on restore
    "from_local": DTensor.__dict__["from_local"],
}

_active: "PlacementMonitor | None" = None


# ---- sites -----------------------------------------------------------------------------------

_UNSET = object()


class _Site:
    __slots__ = (
        "id", "api", "path", "line", "function", "module", "hook", "torch_frame", "calls",
        "forward", "declared", "effective", "mesh", "records", "root", "hooked", "dtype",
        "label_sharded_only", "slice_op", "local_map", "param_ids", "outer", "forced",
    )

    def __init__(self, sid: str, api: str, path: str, line: int, function: str, module: str,
                 hook: str, torch_frame: str):
        self.id = sid
        self.api = api
        self.path = path
        self.line = line
        self.function = function
        self.module = module
        self.hook = hook
        self.torch_frame = torch_frame
        self.calls = 0
        self.forward: list[str] | None = None  # placement strings
        self.declared: list[str] | None = None  # grad_placements as written (None: omitted)
        self.effective: list[str] | None = None  # label kinds the backward actually used
        self.mesh: dict | None = None
        self.records: list[dict] = []  # one per call: {"fp": tensor|None, "grad": bool, ...}
        self.root: "_Site | None" = None
        self.hooked = WeakIdKeyDictionary()
        self.dtype = ""
        self.label_sharded_only = False
        self.slice_op = ""
        self.local_map = ""
        self.param_ids: set[int] = set()  # id() of nn.Parameters converted here (named at collect)
        # the outermost module of the call (the harness may call a submodule of its model
        # directly): `module` is relative to it until collect() names it in the returned model
        self.outer: Any = None
        self.forced: Any = _UNSET  # the --verify-fix kinds for this site, looked up once


class PlacementMonitor:
    """Context manager; see the module docstring. One instance per harness run.

    force: {site_id: ["P", None, ...]} grad-placement kinds to inject per mesh dim at a site
        (None keeps the label that would have been used) — `--verify-fix` proves a fix with it.
    watch: (path, line) pairs of static findings; slices at those lines are recorded even on
        tensors the provenance tracker does not know (e.g. a slice of a replicated parameter).
    """

    def __init__(self, *, force: dict[str, list] | None = None,
                 watch: Iterable[tuple[str, int]] = (), track_provenance: bool = True,
                 force_slices: Iterable[tuple[str, int]] = ()):
        self.force = dict(force or {})
        self._force_slices = {(os.path.abspath(p), int(l)) for p, l in force_slices}
        self._watch = {(os.path.abspath(p), int(l)) for p, l in watch}
        self.track_provenance = track_provenance
        self.sites: dict[str, _Site] = {}
        self._tracked = WeakIdKeyDictionary()
        self._lock = threading.Lock()
        self._mode: _ProvenanceMode | None = None
        self._name_cache: dict[tuple[int, int], tuple[Any, Any, str]] = {}
        self._mesh_cache: dict[int, tuple[Any, dict]] = {}
        self.forced_calls = 0
        self.compile_calls = 0
        # floating dtypes below float32 that matmul-like ops ran in (or casts produced): the
        # reference comparison's tolerance follows the compute precision, not the grad dtype
        self.low_precision: set[str] = set()
        self._param_refs: dict[int, Any] = {}  # id -> parameter: keeps ids of param_ids valid

    # -- activation --------------------------------------------------------------------------
    def __enter__(self) -> "PlacementMonitor":
        global _active
        if _active is not None:
            raise RuntimeError("a PlacementMonitor is already active in this process")
        _active = self
        DTensor.to_local = _to_local
        DTensor.full_tensor = _full_tensor
        DTensor.from_local = staticmethod(_from_local)
        if self.track_provenance:
            self._mode = _ProvenanceMode(self)
            self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        global _active
        try:
            if self._mode is not None:
                self._mode.__exit__(*exc)
                self._mode = None
        finally:
            DTensor.to_local = _ORIG["to_local"]
            DTensor.full_tensor = _ORIG["full_tensor"]
            DTensor.from_local = _ORIG["from_local"]
            _active = None

    def follow(self, new: torch.Tensor, old: torch.Tensor) -> None:
        """`new` stands for `old` from now on (GradProbe's identity tap on a module input: made
        inside an autograd Function, which the provenance mode does not see)."""
        root = self._tracked.get(old)
        if root is not None and new.requires_grad and not isinstance(new, DTensor):
            self._tracked[new] = root

    # -- attribution -------------------------------------------------------------------------
    def _mesh_info(self, mesh) -> dict:
        hit = self._mesh_cache.get(id(mesh))
        if hit is not None and hit[0] is mesh:
            return hit[1]
        coord = mesh.get_coordinate()
        if fingerprints._SIM is not None:
            coord = fingerprints._SIM.coord(coord)  # one coordinate per simulated rank
        info = {
            "shape": list(mesh.mesh.shape),
            "dim_names": list(mesh.mesh_dim_names) if getattr(mesh, "mesh_dim_names", None) else None,
            "layout": mesh.mesh.tolist(),
            "coord": [int(c) for c in coord] if coord is not None and fingerprints._SIM is None else coord,
        }
        self._mesh_cache[id(mesh)] = (mesh, info)
        return info

    def _site(self, api: str, frame, mesh=None) -> _Site | None:
        """The site of this call, or None for torch's own plumbing (not a user decision).

        A call whose caller is torch code counts only when it runs inside a module's forward
        pre/post hook: that is a ParallelStyle converting on the user's behalf. Anything else in
        torch (Tensor.backward on a DTensor loss, redistribute internals, optimizers, checkpoint
        loading) is torch's own and correct by construction.
        """
        path, line, func, module, hook, torch_frame, outer = locate(frame, self._name_cache)
        lm = ""
        if not _is_user_file(frame.f_code.co_filename):
            if frame.f_code.co_name == "_local_map_wrapped":
                # local_map converts its inputs/outputs on the user's behalf: a user decision
                # (in_grad_placements), attributed to the local_map'd function
                flocals = frame.f_locals
                fn = flocals.get("func")
                code = _code_of(fn)
                arg_idx = flocals.get("idx") if api != "from_local" else None
                if code is not None:
                    lm = f"{os.path.abspath(code.co_filename)}:{code.co_firstlineno}:{code.co_name}"
                else:
                    lm = getattr(fn, "__qualname__", "?")
                if isinstance(arg_idx, int):
                    lm += f"|arg{arg_idx}"  # each input of the local_map'd function is its own site
            elif hook not in ("pre", "post"):
                return None
        # keyed by the outermost module object too: collect() turns the pair into the module's
        # fully qualified name in the model the harness returns (see `payload.fqn_sites`)
        okey = f"{id(outer)}/" if outer is not None else ""
        sid = site_id(api, path, line, okey + module, hook, lm)
        site = self.sites.get(sid)
        if site is None:
            site = _Site(sid, api, path, line, func, module, hook, torch_frame)
            site.local_map = lm
            site.outer = outer  # holds a reference: the id in the key cannot be reused
            if mesh is not None:
                site.mesh = self._mesh_info(mesh)
            self.sites[sid] = site
        site.calls += 1
        return site

    # -- recording ---------------------------------------------------------------------------
    def _note_precision(self, func, args, out) -> None:
        if func in _CAST_FUNCS:
            if isinstance(out, torch.Tensor) and out.dtype in _LOW_DTYPES:
                self.low_precision.add(_LOW_DTYPES[out.dtype])
            return
        for a in args[:2]:
            if isinstance(a, torch.Tensor) and a.dtype in _LOW_DTYPES:
                self.low_precision.add(_LOW_DTYPES[a.dtype])
        dev = next((a.device.type for a in args[:1] if isinstance(a, torch.Tensor)), None)
        if dev is not None:
            ac = _compat.autocast_dtype(dev)
            if ac in _LOW_DTYPES:
                self.low_precision.add(_LOW_DTYPES[ac])

    def _label(self, site: _Site, api: str, dt, declared) -> tuple[list[str], Any]:
        fwd_kinds = [placement_kind(p) for p in dt.placements]
        if declared is not None:
            eff = [placement_kind(p) for p in declared]
        elif api == "full_tensor":
            eff = ["R"] * len(fwd_kinds)  # redistributed to Replicate, then labelled Replicate
        else:
            eff = _compat.default_grad_kinds(fwd_kinds)
        forced = self._forced(site)
        new_declared = declared
        if forced:
            base = list(eff)
            for i, k in enumerate(forced):
                # only relabel Replicate<->Partial: a Shard label describes different data per
                # rank and is never what a fix changes
                if k and i < len(base) and base[i] in ("R", "P") and k in ("R", "P"):
                    base[i] = k
            if base != eff:
                eff = base
                ref = dt.placements
                new_declared = _compat.kinds_to_placements(eff, ref)
                self.forced_calls += 1
        return eff, new_declared

    def _forced(self, site: _Site):
        """The --verify-fix kinds for this site: `force` is keyed by the ids a check run reported,
        whose module is the fully qualified name; this run may reach the module through another
        outer module, so the name is matched as a dotted suffix."""
        if site.forced is _UNSET:
            site.forced = None
            for key, kinds in self.force.items():
                api, path, line, module, hook, lm = split_site_id(key)
                if ((api, path, line, hook, lm) == (site.api, site.path, str(site.line), site.hook, site.local_map)
                        and module_suffix(module, site.module)):
                    site.forced = kinds
                    break
        return site.forced

    def _attach_grad_hook(self, site: _Site, t: torch.Tensor, record: dict, *, dtensor: bool = False) -> None:
        if not isinstance(t, torch.Tensor) or not t.requires_grad:
            return
        record["grad"] = True

        def hook(g, _rec=record):
            if g is None:
                return None
            with self._lock:
                if dtensor and isinstance(g, DTensor):
                    _rec["grad_placements"] = [placement_kind(p) for p in g.placements]
                    g = g._local_tensor
                _rec["fp"] = fingerprint(g)
                _rec["dtype"] = str(g.dtype).replace("torch.", "")
                _rec["hits"] = _rec.get("hits", 0) + 1
            return None

        t.register_hook(hook)

    def on_exit_call(self, api: str, dt, grad_placements, call_orig, frame):
        """to_local / full_tensor: label, call, hook the result, track it for provenance."""
        site = self._site(api, frame, dt.device_mesh)
        if site is None:
            return call_orig(dt, grad_placements)
        eff, declared = self._label(site, api, dt, grad_placements)
        if isinstance(dt, torch.nn.Parameter):
            # a parameter converted in place of a collective: if its gradient turns out wrong by
            # the same factor on every rank (only a reference run sees that), the cause is here
            site.param_ids.add(id(dt))
            self._param_refs[id(dt)] = dt
        if site.forward is None:
            site.forward = [placement_str(p) for p in dt.placements]
            site.declared = None if grad_placements is None else [placement_str(p) for p in grad_placements]
            site.effective = eff
            site.label_sharded_only = all(k == "S" for k in eff)
        record: dict = {"grad": False}
        site.records.append(record)
        _tls.busy = True
        try:
            out = call_orig(dt, declared)
        finally:
            _tls.busy = False
        site.dtype = str(out.dtype).replace("torch.", "")
        if torch.is_grad_enabled():
            self._attach_grad_hook(site, out, record)
            if self.track_provenance and out.requires_grad and not isinstance(out, DTensor):
                self._tracked[out] = site
        return out

    def on_from_local(self, local, mesh, placements, call_orig, frame, args, kwargs):
        out = call_orig(local, mesh, placements, *args, **kwargs)
        if _in_backward():
            return out
        site = self._site("from_local", frame, out.device_mesh)
        if site is None:
            return out
        if site.forward is None:
            site.forward = [placement_str(p) for p in out.placements]
            gp = kwargs.get("grad_placements")
            site.declared = None if gp is None else [placement_str(p) for p in gp]
            site.effective = None  # decided by the gradient DTensor that arrives in backward
        site.dtype = str(out.dtype).replace("torch.", "")
        record: dict = {"grad": False}
        site.records.append(record)
        root = self._tracked.get(local) if isinstance(local, torch.Tensor) else None
        if root is not None and site.root is None:
            # the local tensor came out of a monitored exit: if that exit labels its gradient
            # Partial while this from_local's backward reduces (Replicate), a branch counts twice
            site.root = root
        if torch.is_grad_enabled():
            self._attach_grad_hook(site, out, record, dtensor=True)
            self._attach_input_grad_hook(out, record)
        return out

    def _attach_input_grad_hook(self, out, record: dict) -> None:
        """Fingerprint what from_local's backward hands to the local tensor (`in_fp`): after the
        redistribution to the forward placements, so a Partial gradient arriving at a Replicate
        from_local shows up all-reduced, identical on every rank."""
        node = getattr(out, "grad_fn", None)
        if node is None or not hasattr(node, "register_hook"):
            return

        def hook(grad_inputs, _grad_outputs, _rec=record):
            g = grad_inputs[0] if grad_inputs else None
            if isinstance(g, torch.Tensor):
                with self._lock:
                    _rec["in_fp"] = fingerprint(g._local_tensor if isinstance(g, DTensor) else g)
            return None

        node.register_hook(hook)

    def _record_slice(self, func, base: torch.Tensor, root: _Site | None, frame) -> None:
        if isinstance(base, DTensor):
            return
        # cheap pre-check before the stack walk: the immediate caller is user code or watched
        path, line = os.path.abspath(frame.f_code.co_filename), frame.f_lineno
        if root is None and (path, line) not in self._watch:
            return
        if not _is_user_file(path):
            return
        site = self._site("slice", frame, None)
        if site is None:
            return
        if site.forward is None:
            site.slice_op = getattr(func, "__name__", str(func))
            site.root = root
            if root is not None:
                site.mesh = root.mesh
                site.effective = root.effective
                site.forward = root.forward
                site.declared = root.declared
            else:
                site.forward = []
                site.effective = []
        site.dtype = str(base.dtype).replace("torch.", "")
        if base in site.hooked:
            return  # one hook per (site, tensor): a loop slicing one tensor many times
        site.hooked[base] = True
        record: dict = {"grad": False}
        if root is None:
            # no label: which ranks hold replicas is read from the forward value
            record["fwd"] = fingerprint(base)
        site.records.append(record)
        if torch.is_grad_enabled():
            self._attach_grad_hook(site, base, record)

    # -- report ------------------------------------------------------------------------------
    def fqn_sites(self, model: Any) -> dict[str, tuple[str, str]]:
        """site id -> (id, module), the module named in `model`: see payload.fqn_sites."""
        return payload.fqn_sites(self, model)

    def collect(self, model: torch.nn.Module | None = None, *, reference: dict | None = None) -> dict:
        """This rank's payload (see payload.collect). With `reference` it is collective: call it
        on all ranks."""
        return payload.collect(self, model, reference=reference)


# ---- the wrappers ----------------------------------------------------------------------------

def _to_local(self, *, grad_placements=None):
    m = _active
    if m is None or getattr(_tls, "busy", False):
        return _ORIG["to_local"](self, grad_placements=grad_placements)
    return m.on_exit_call("to_local", self, grad_placements,
                          lambda dt, gp: _ORIG["to_local"](dt, grad_placements=gp), sys._getframe(1))


def _full_tensor(self, *, grad_placements=None):
    m = _active
    if m is None or getattr(_tls, "busy", False):
        return _ORIG["full_tensor"](self, grad_placements=grad_placements)
    return m.on_exit_call("full_tensor", self, grad_placements,
                          lambda dt, gp: _ORIG["full_tensor"](dt, grad_placements=gp), sys._getframe(1))


def _from_local(local_tensor, device_mesh=None, placements=None, *args, **kwargs):
    orig = _ORIG["from_local"].__func__
    m = _active
    if m is None or getattr(_tls, "busy", False):
        return orig(local_tensor, device_mesh, placements, *args, **kwargs)
    return m.on_from_local(local_tensor, device_mesh, placements, orig, sys._getframe(1), args, kwargs)
