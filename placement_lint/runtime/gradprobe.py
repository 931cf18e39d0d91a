"""GradProbe: where does a wrong gradient first appear? (`confirm --reference`)

While active, every module call's tensor inputs (as the caller passes them, before the module's
own input hooks: a ParallelStyle's conversion belongs to the module) and outputs (as the caller
receives them, after the module's output hooks) get a gradient hook. The gradient is reduced to a
*sketch*: K projections onto fixed pseudo-random weights of each element's position in the
**global** tensor (a DTensor shard's elements are placed by its offsets). Sketches are linear, so
the ranks' sketches add up to the sketch of the full gradient exactly as the shards or partial
addends add up to it: the checker rebuilds a full gradient's sketch from the placements without
moving a tensor, and compares it with the one-rank reference run's sketch of the same call.

Each input is wrapped in an identity autograd function so that its hook sees only the gradient
flowing into this module (not the sum over every consumer of the tensor, such as a residual
branch). Numerics are unchanged: the wrapper's forward is a copy, its backward passes the
gradient through. Nothing communicates; sketches stay on the device until `collect`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn.modules import module as _module

from placement_lint.runtime import _compat, fingerprints
from placement_lint.runtime import monitor as _monitor
from placement_lint.runtime._compat import DTensor, placement_kind
from placement_lint.runtime.attribution import _is_user_file

#: projections per sketch: enough to tell "equal", "k times" and "plus another path" apart
K = 16
#: larger gradients are not sketched (time and memory of the position weights)
MAX_NUMEL = 1 << 24
_CHUNK = 1 << 16
_A = [0.7548776662466927 * (k + 1) + 0.1 for k in range(K)]  # frequencies of the weights
_B = [0.5698402909980532 * (k + 1) for k in range(K)]


class _Tap(torch.autograd.Function):
    """Identity with a gradient of its own: the input's share of this module's backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g


def _offsets(dt_like, global_shape) -> list[int] | None:
    """Global offsets of a DTensor's local shard (None: cannot tell)."""
    fn = _compat.local_offsets_fn()
    if fn is not None:
        try:
            _shape, offset = fn(global_shape, dt_like.device_mesh, dt_like.placements)
            return [int(o) for o in offset]
        except Exception:  # noqa: BLE001 - a private torch helper; fall back below
            pass
    coord = dt_like.device_mesh.get_coordinate()
    if coord is None:
        return None
    return _manual_offsets(global_shape, list(dt_like.device_mesh.mesh.shape), dt_like.placements, coord)


@torch.no_grad()
def sketch(local: torch.Tensor, global_shape, offsets) -> torch.Tensor | None:
    """K float64 projections of `local` placed at `offsets` in a tensor of `global_shape`."""
    n = local.numel()
    if n == 0 or n > MAX_NUMEL or len(offsets) != local.dim():
        return None
    dev = local.device
    strides = [1] * len(global_shape)
    for d in range(len(global_shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * int(global_shape[d + 1])
    idx = torch.zeros((), dtype=torch.float64, device=dev)
    for d, size in enumerate(local.shape):
        r = (torch.arange(size, device=dev, dtype=torch.float64) + offsets[d]) * strides[d]
        idx = idx.unsqueeze(-1) + r
    idx = idx.reshape(-1)
    vals = local.detach().reshape(-1).to(torch.float64)
    a = torch.tensor(_A, dtype=torch.float64, device=dev).unsqueeze(1)
    b = torch.tensor(_B, dtype=torch.float64, device=dev).unsqueeze(1)
    out = torch.zeros(K, dtype=torch.float64, device=dev)
    for s in range(0, n, _CHUNK):
        w = torch.sin(idx[s:s + _CHUNK].unsqueeze(0) * a + b)
        out += w @ vals[s:s + _CHUNK]
    return out


class GradProbe:
    """Context manager; see the module docstring. `collect(model)` -> picklable records."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._calls: dict[int, int] = {}  # id(module) -> calls so far
        self._modules: dict[int, Any] = {}  # keeps ids valid
        self._handles: list = []

    def __enter__(self) -> "GradProbe":
        self._handles.append(_module.register_module_forward_pre_hook(self._pre))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- hooks -------------------------------------------------------------------------------
    def _pre(self, mod, args):
        if not torch.is_grad_enabled():
            return None
        call = self._calls.get(id(mod), 0)
        self._calls[id(mod)] = call + 1
        self._modules[id(mod)] = mod
        new_args = list(args)
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor) and a.requires_grad and a.is_floating_point():
                tapped = _Tap.apply(a)
                monitor = _monitor._active
                if monitor is not None:
                    monitor.follow(tapped, a)  # keep the check's provenance through the tap
                self._hook(tapped, mod, call, f"in{i}")
                new_args[i] = tapped
        holder: dict = {}

        def post(m, _args, out, _call=call):
            holder["h"].remove()
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for j, o in enumerate(outs):
                if isinstance(o, torch.Tensor) and o.requires_grad and o.is_floating_point():
                    self._hook(o, m, _call, f"out{j}")
            return None

        # appended: runs after the module's own output hooks (a style's to_local), so the
        # output is what the caller receives
        holder["h"] = mod.register_forward_hook(post)
        return tuple(new_args) if any(x is not y for x, y in zip(new_args, args)) else None

    def _hook(self, t: torch.Tensor, mod, call: int, slot: str) -> None:
        rec: dict = {"module": id(mod), "call": call, "slot": slot}
        self.records.append(rec)

        def on_grad(g, _rec=rec):
            if g is None:
                return None
            if fingerprints._SIM is not None:
                _sim_sketch(g, _rec, fingerprints._SIM)
                return None
            if isinstance(g, DTensor):
                local = g._local_tensor
                shape = list(g.shape)
                offsets = _offsets(g, shape)
                _rec["kinds"] = [placement_kind(p) for p in g.placements]
                _rec["coord"] = [int(c) for c in (g.device_mesh.get_coordinate() or [])]
                _rec["mesh_shape"] = list(g.device_mesh.mesh.shape)
            else:
                local, shape, offsets = g, list(g.shape), [0] * g.dim()
            if offsets is not None:
                s = sketch(local, shape, offsets)
                if s is not None:
                    _rec["sketch"] = s
                    _rec["shape"] = shape
            return None

        t.register_hook(on_grad)

    # -- report ------------------------------------------------------------------------------
    def collect(self, model) -> list[dict]:
        """Records with sketches, keyed by the module's fully qualified name in `model`."""
        names: dict[int, str] = {}
        if model is not None:
            for name, m in model.named_modules():
                names.setdefault(id(m), name)
        out, rows = [], []
        for rec in self.records:
            if "sketch" not in rec or rec["module"] not in names:
                continue
            entry = {k: v for k, v in rec.items() if k not in ("module", "sketch")}
            entry["module"] = names[rec["module"]]
            out.append(entry)
            rows.append(rec["sketch"] if isinstance(rec["sketch"], dict) else rec["sketch"].to("cpu"))
        if rows and fingerprints._SIM is not None:
            for entry, row in zip(out, rows):  # PerRank of tensors (or one tensor: every rank's)
                entry["sketch"] = type(row)({r: t.tolist() for r, t in row.items()}) if isinstance(row, dict) else row.tolist()
        elif rows:
            for entry, vals in zip(out, torch.stack(rows).tolist()):
                entry["sketch"] = vals
        return out


def _manual_offsets(global_shape, mesh_shape: list[int], placements, coord: list[int]) -> list[int]:
    """Offsets of the shard at mesh coordinate `coord`: torch.chunk's split per Shard dim (nested
    shards of one tensor dim are rare here)."""
    offsets = [0] * len(global_shape)
    for i, p in enumerate(placements):
        if placement_kind(p) == "S":
            d = p.dim % len(global_shape)
            offsets[d] += coord[i] * math.ceil(global_shape[d] / mesh_shape[i])
    return offsets


def _sim_sketch(g, rec: dict, sim) -> None:
    """--backend sim: one sketch per simulated rank (the gradient is a LocalTensor)."""
    from placement_lint.runtime.sim import PerRank

    dt = isinstance(g, DTensor)
    local = g._local_tensor if dt else g
    shape = list(g.shape)
    per = sim.shards(local) or {r: local for r in sim.ranks}
    coords = sim.coord(g.device_mesh.get_coordinate()) if dt else None
    mesh_shape = list(g.device_mesh.mesh.shape) if dt else []
    out = {}
    with sim.api.no_dispatch():
        for r, x in per.items():
            offsets = _manual_offsets(shape, mesh_shape, g.placements, coords[r]) if dt else [0] * x.dim()
            sk = sketch(x, shape, offsets)
            if sk is None:
                return
            out[r] = sk
    rec["sketch"], rec["shape"] = PerRank(out), shape
    if dt:
        rec["kinds"] = [placement_kind(p) for p in g.placements]
        rec["coord"] = coords
        rec["mesh_shape"] = mesh_shape


def module_locations(model, modules: list[str]) -> dict[str, dict]:
    """Where each named module's forward is defined, in user code: a torch module (nn.Linear) is
    placed at the nearest enclosing module whose forward the user wrote."""
    import inspect

    out = {}
    named = dict(model.named_modules()) if model is not None else {}
    for name in modules:
        parts = name.split(".") if name else []
        for depth in range(len(parts), -1, -1):
            mod = named.get(".".join(parts[:depth]))
            fwd = getattr(type(mod), "forward", None) if mod is not None else None
            try:
                path = inspect.getsourcefile(fwd) if fwd is not None else None
                line = inspect.getsourcelines(fwd)[1] if path else 0
            except (OSError, TypeError):
                path, line = None, 0
            if path and _is_user_file(path):
                out[name] = {"path": path, "line": line, "class": type(mod).__name__}
                break
    return out
