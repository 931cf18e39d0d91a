"""PlacementMonitor: instrument every exit from (and entry into) the DTensor world.

While active, `DTensor.to_local`, `DTensor.full_tensor` and `DTensor.from_local` are wrapped.
Each call is attributed to a *site*: the first frame of user code on the stack (not torch, not
placement-lint), plus the module path and hook kind when the call runs inside a module's forward
hook (the ParallelStyle case: `PrepareModuleInputOutput`, `ColwiseParallel(use_local_output=True)`,
a project style). The returned local tensor gets a gradient hook that stores a small fingerprint
of the gradient that reaches it. Nothing in forward or backward communicates: fingerprints stay
on the device until `collect()`, which moves them to the host in one copy; the caller then runs
one `all_gather_object` (see `gather`) and `verdicts.compute` decides on rank 0.

Provenance: tensors derived from a monitored local tensor (views, reshapes, arithmetic, a helper's
return value) are followed with a TorchFunctionMode, so a rank slice of any of them is recorded as
its own site at the slice's line, labelled by the local tensor it came from.

The monitor never changes numerics: hooks return None, fingerprints are computed under no_grad on
detached tensors, and the only behavioural switch (`force`, used by `--verify-fix`) is explicit.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

import placement_lint
from placement_lint.runtime import _compat
from placement_lint.runtime._compat import DTensor, Replicate, placement_kind, placement_str
from placement_lint.runtime.site_ids import module_suffix, site_id, split_site_id

#: what a site record carries into the payload
RECORD_KEYS = ("grad", "fp", "fwd", "in_fp", "dtype", "grad_placements", "hits")
N_SAMPLES = 48  # sampled gradient values per fingerprint: enough to see a rank's slice
FP_HEAD = ("norm", "l1", "sum", "absmax", "hash")
FP_LEN = len(FP_HEAD) + N_SAMPLES

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_PKG_DIR = os.path.dirname(os.path.abspath(placement_lint.__file__)) + os.sep
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep
_CALL_IMPL_CODE = torch.nn.Module._call_impl.__code__
_MODULE_PY = _CALL_IMPL_CODE.co_filename

_ORIG = {
    "to_local": DTensor.to_local,
    "full_tensor": DTensor.full_tensor,
    # from_local is a staticmethod: keep the underlying function, re-wrap on restore
    "from_local": DTensor.__dict__["from_local"],
}

_active: "PlacementMonitor | None" = None
# --backend sim (sim.py) installs its adapter here while it runs: every "local" tensor is then a
# LocalTensor holding one tensor per simulated rank, and the few places below that turn tensors
# into numbers do it per simulated rank. None (the default) leaves every code path as it was.
_SIM: Any = None
_tls = threading.local()  # .busy: inside one of our wrappers (suppresses nested records)


def _is_user_file(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    fn = os.path.abspath(filename)
    if fn.startswith(_TORCH_DIR) or fn.startswith(_PKG_DIR):
        return False
    if fn.startswith(_STDLIB_DIR) and "-packages" + os.sep not in fn:
        return False  # contextlib, functools... but not site-packages (torchtitan is user code)
    return True


def _in_backward() -> bool:
    # from_local is called by _ToTorchTensor.backward; that is torch's plumbing, not a site.
    node = getattr(torch._C, "_current_autograd_node", None)
    return node is not None and node() is not None


def _code_of(fn: Any):
    seen = 0
    while fn is not None and seen < 8:
        seen += 1
        code = getattr(fn, "__code__", None)
        if code is not None:
            return code
        fn = getattr(fn, "func", None) or getattr(fn, "__func__", None) or getattr(fn, "__wrapped__", None)
    return None


# ---- fingerprints ----------------------------------------------------------------------------

_weights_cache: dict[tuple[int, str], torch.Tensor] = {}
_HASH_BLOCK = 1024


def _weights(n: int, device: torch.device) -> torch.Tensor:
    key = (n, str(device))
    w = _weights_cache.get(key)
    if w is None:
        # fixed pseudo-random weights in [-1, 1]: a position-sensitive checksum
        w = torch.sin(torch.arange(n, dtype=torch.float32, device=device) * 12.9898 + 0.5)
        _weights_cache[key] = w
    return w


def _sample_index(n: int, device: torch.device) -> torch.Tensor:
    key = (-n, str(device))
    idx = _weights_cache.get(key)
    if idx is None:
        if n <= N_SAMPLES:
            idx = torch.arange(n, device=device)
        else:
            # multiplicative hashing spreads samples over rows *and* columns, so a column slice
            # (x[:, r*n:(r+1)*n]) is seen as well as a row slice
            idx = torch.tensor([(k * 2654435761 + 97) % n for k in range(N_SAMPLES)], device=device)
        _weights_cache[key] = idx
    return idx


def fingerprint(t: torch.Tensor) -> torch.Tensor:
    """A FP_LEN float64 vector on t's device: norm, l1, sum, absmax, checksum, sampled values.

    No host sync, no collective: safe inside a backward hook. Under --backend sim, one vector per
    simulated rank (a LocalTensor of them).
    """
    if _SIM is not None:
        return _SIM.fingerprint(t, _fingerprint)
    return _fingerprint(t)


@torch.no_grad()
def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    n = flat.numel()
    dev = flat.device
    out = torch.zeros(FP_LEN, dtype=torch.float64, device=dev)
    if n == 0:
        return out
    f = flat.float() if flat.dtype not in (torch.float32, torch.float64) else flat
    f = f.to(torch.float64) if f.dtype == torch.float64 else f
    out[0] = torch.linalg.vector_norm(f)
    out[1] = f.abs().sum()
    out[2] = f.sum()
    out[3] = f.abs().max()
    m = (n // _HASH_BLOCK) * _HASH_BLOCK
    h = torch.zeros((), dtype=f.dtype, device=dev)
    wb = _weights(_HASH_BLOCK, dev).to(f.dtype)
    if m:
        rows = f[:m].view(-1, _HASH_BLOCK) @ wb
        h = h + (rows * _weights(rows.numel(), dev).to(f.dtype).flip(0)).sum()
    if n > m:
        h = h + (f[m:] * wb[: n - m]).sum() * 0.5
    out[4] = h
    idx = _sample_index(n, dev)
    out[5 : 5 + idx.numel()] = f[idx].to(torch.float64)
    return out


# ---- provenance ------------------------------------------------------------------------------

def _slice_funcs() -> set:
    T = torch.Tensor
    names = ["__getitem__", "narrow", "chunk", "split", "tensor_split", "unbind", "index_select", "select"]
    out = set()
    for n in names:
        for owner in (T, torch):
            fn = getattr(owner, n, None)
            if fn is not None:
                out.add(fn)
    return out


_SLICE_FUNCS = _slice_funcs()
_SLICE_NAMES = {getattr(f, "__name__", str(f)) for f in _SLICE_FUNCS}


def _low_precision_funcs() -> tuple[set, set]:
    """(matmul-like ops, casts): where a model's compute precision is decided."""
    F = torch.nn.functional
    mm = set()
    for holder, names in ((torch, ("matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "einsum",
                                   "_grouped_mm", "_scaled_grouped_mm", "conv1d", "conv2d")),
                          (torch.Tensor, ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm")),
                          (F, ("linear", "scaled_dot_product_attention", "conv1d", "conv2d"))):
        for n in names:
            f = getattr(holder, n, None)
            if f is not None:
                mm.add(f)
    casts = {f for f in (getattr(torch.Tensor, n, None) for n in ("to", "type", "bfloat16", "half"))
             if f is not None}
    return mm, casts


_MATMUL_FUNCS, _CAST_FUNCS = _low_precision_funcs()
_LOW_PRECISION_FUNCS = _MATMUL_FUNCS | _CAST_FUNCS
_LOW_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
for _n in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _n):
        _LOW_DTYPES[getattr(torch, _n)] = _n


class _ProvenanceMode(TorchFunctionMode):
    """Follows tensors derived from monitored local tensors; records slices of them."""

    def __init__(self, monitor: "PlacementMonitor"):
        super().__init__()
        self.m = monitor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        m = self.m
        if m._force_slices and func in _SLICE_FUNCS and args and isinstance(args[0], torch.Tensor):
            f = sys._getframe(1)
            if (os.path.abspath(f.f_code.co_filename), f.f_lineno) in m._force_slices and args[0].requires_grad:
                # --verify-fix for a hand slice of a replicated tensor: sum its gradient over the
                # ranks, which is what redistribute(Shard(d))'s backward (an all-gather) amounts to
                args = (_SumGradOverWorld.apply(args[0]),) + tuple(args[1:])
                m.forced_calls += 1
        out = func(*args, **kwargs)
        if func in _LOW_PRECISION_FUNCS:
            m._note_precision(func, args, out)
        if not m._tracked and not (m._watch and func in _SLICE_FUNCS):
            return out  # fast path: nothing derived from a local tensor is alive
        if getattr(_tls, "busy", False):
            return out
        root = None
        src = None
        for a in _iter_tensors(args, kwargs):
            r = m._tracked.get(a)
            if r is not None:
                src = a
                # prefer a root whose label is not all-Shard: that is the one a slice can break
                if root is None or (root.label_sharded_only and not r.label_sharded_only):
                    root = r
        if func in _SLICE_FUNCS and args and isinstance(args[0], torch.Tensor):
            base = args[0]
            if root is not None and src is not base:
                root = m._tracked.get(base, root)
            m._record_slice(func, base, root, sys._getframe(1))
        if root is None:
            return out
        if isinstance(out, torch.Tensor):
            self._track(out, root)
        elif isinstance(out, (tuple, list)):
            for o in out:
                if isinstance(o, torch.Tensor):
                    self._track(o, root)
        return out

    def _track(self, t: torch.Tensor, root: "_Site") -> None:
        if isinstance(t, DTensor) or not t.requires_grad or not t.is_floating_point():
            return  # back in the DTensor world, or no gradient to follow
        self.m._tracked[t] = root


class _SumGradOverWorld(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        if dist.is_initialized():
            dist.all_reduce(g)
        return g


def _iter_tensors(args, kwargs):
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    yield b
    for a in kwargs.values():
        if isinstance(a, torch.Tensor):
            yield a


# ---- sites -----------------------------------------------------------------------------------

_UNSET = object()


def module_names(model: Any) -> dict[int, str]:
    """id(module) -> its fully qualified name in `model` (the first, if it is reachable twice)."""
    names: dict[int, str] = {}
    named = getattr(model, "named_modules", None)
    if named is None:
        return names
    for name, mod in named():
        names.setdefault(id(mod), name)
    return names


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
    def _locate(self, frame) -> tuple[str, int, str, str, str, str, Any]:
        """(path, line, function, module_path, hook_kind, torch_frame, outermost module) for the
        current call; module_path is relative to the outermost module being called."""
        user = None
        torch_frame = ""
        chain: list[Any] = []  # modules being called, innermost first
        hook = ""
        prev_code = None
        hook_caller = None  # code object called by Module._call_impl (or its nested `inner`)
        f = frame
        while f is not None:
            code = f.f_code
            if code.co_filename == _MODULE_PY and code.co_name == "inner" and hook_caller is None:
                # torch >= 2.x runs hooks from a closure nested in _call_impl
                hook_caller = prev_code
            if code is _CALL_IMPL_CODE:
                mod = f.f_locals.get("self")
                if mod is not None:
                    if not chain:
                        # the innermost module call: did it reach us through a hook or forward?
                        hook = self._hook_kind(mod, hook_caller or prev_code)
                    chain.append(mod)
            elif user is None:
                fn = code.co_filename
                if _is_user_file(fn):
                    user = (os.path.abspath(fn), f.f_lineno, code.co_qualname if hasattr(code, "co_qualname") else code.co_name)
                elif not torch_frame and os.path.abspath(fn).startswith(_TORCH_DIR):
                    torch_frame = f"{os.path.relpath(os.path.abspath(fn), os.path.dirname(_TORCH_DIR.rstrip(os.sep)))}:{f.f_lineno} {code.co_name}"
            prev_code = code
            f = f.f_back
        if user is None:
            user = ("<torch>", 0, "")
        module = self._module_path(chain)
        return user[0], user[1], user[2], module, hook, torch_frame, (chain[-1] if chain else None)

    @staticmethod
    def _hook_kind(mod, called_code) -> str:
        """Which part of the module call invoked us: 'pre' hook, 'post' hook or 'forward'."""
        if called_code is None:
            return ""
        fwd = _code_of(getattr(type(mod), "forward", None))
        if called_code is fwd:
            return "forward"
        for h in getattr(mod, "_forward_pre_hooks", {}).values():
            if _code_of(h) is called_code:
                return "pre"
        for h in getattr(mod, "_forward_hooks", {}).values():
            if _code_of(h) is called_code:
                return "post"
        try:
            from torch.nn.modules import module as _m

            for h in _m._global_forward_pre_hooks.values():
                if _code_of(h) is called_code:
                    return "pre"
            for h in _m._global_forward_hooks.values():
                if _code_of(h) is called_code:
                    return "post"
        except (ImportError, AttributeError):
            pass
        name = called_code.co_name
        if "input" in name or name.startswith("pre"):
            return "pre"
        if "output" in name or "out" in name:
            return "post"
        return "forward"

    def _module_path(self, chain: list[Any]) -> str:
        if not chain:
            return ""
        # names relative to the outermost module being called (the model the harness runs):
        # stable across ranks, unlike object ids, so it can be part of a site id
        parts = [self._child_name(parent, child) for child, parent in zip(chain, chain[1:])]
        parts.reverse()
        return ".".join(parts)

    def _child_name(self, parent, child) -> str:
        key = (id(parent), id(child))
        hit = self._name_cache.get(key)
        if hit is not None and hit[0] is parent and hit[1] is child:
            return hit[2]
        name = ""
        for n, m in getattr(parent, "_modules", {}).items():
            if m is child:
                name = n
                break
        if not name:
            for n, m in parent.named_modules():
                if m is child and n:
                    name = n
                    break
        if not name:
            name = f"<{type(child).__name__}>"
        self._name_cache[key] = (parent, child, name)  # holds refs: ids cannot be reused
        return name

    def _mesh_info(self, mesh) -> dict:
        hit = self._mesh_cache.get(id(mesh))
        if hit is not None and hit[0] is mesh:
            return hit[1]
        coord = mesh.get_coordinate()
        if _SIM is not None:
            coord = _SIM.coord(coord)  # one coordinate per simulated rank
        info = {
            "shape": list(mesh.mesh.shape),
            "dim_names": list(mesh.mesh_dim_names) if getattr(mesh, "mesh_dim_names", None) else None,
            "layout": mesh.mesh.tolist(),
            "coord": [int(c) for c in coord] if coord is not None and _SIM is None else coord,
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
        path, line, func, module, hook, torch_frame, outer = self._locate(frame)
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
        # fully qualified name in the model the harness returns (see `fqn_sites`)
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
    @torch.no_grad()
    def _param_entry(self, p, ref, with_reference: bool) -> dict | None:
        """Fingerprint one parameter's gradient. Collective for Partial grads and references:
        callers run it on every rank over the same parameter list."""
        g = p.grad
        if isinstance(p, DTensor):
            entry: dict = {
                "dtensor": True,
                "placements": [placement_kind(x) for x in p.placements],
                "placement_strs": [placement_str(x) for x in p.placements],
                "mesh": self._mesh_info(p.device_mesh),
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

    @staticmethod
    def _records(site: _Site) -> list[dict]:
        return [{k: v for k, v in rec.items() if k in RECORD_KEYS} for rec in site.records]

    def fqn_sites(self, model: Any) -> dict[str, tuple[str, str]]:
        """site id -> (id, module) with the module named by its fully qualified name in `model`
        (the module the harness returned), whatever module the harness called: a site inside
        `layers.0.moe` is `layers.0.moe.router.gate` even when the harness ran
        `model.layers["0"].moe(x)`. A module outside `model` keeps its name relative to the
        outermost module that ran."""
        names = module_names(model) if model is not None else {}
        out: dict[str, tuple[str, str]] = {}
        for site in self.sites.values():
            module = site.module
            if site.outer is not None and id(site.outer) in names:
                prefix = names[id(site.outer)]
                module = ".".join(p for p in (prefix, module) if p)
            out[site.id] = (site_id(site.api, site.path, site.line, module, site.hook, site.local_map), module)
        return out

    def collect(self, model: torch.nn.Module | None = None, *, reference: dict | None = None) -> dict:
        """This rank's payload (plain Python, picklable). One device->host copy.

        With `reference` (param name -> full gradient from the one-rank run) this issues one
        `full_tensor()` per DTensor parameter, on every rank in the same order: call it on all
        ranks. Without it, collect() is communication-free.
        """
        fps: list[torch.Tensor] = []
        slots: list[tuple[dict, str]] = []
        for site in self.sites.values():
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
                entry = self._param_entry(p, reference.get(name) if reference is not None else None,
                                          reference is not None)
                if entry is None:
                    continue
                for key in ("fp", "value"):
                    if isinstance(entry.get(key), torch.Tensor):
                        slots.append((entry, key))
                        fps.append(entry[key].to("cpu"))
                params[name] = entry
        if fps:
            host = _SIM.host_rows(fps) if _SIM is not None else torch.stack(fps).tolist()
            for (holder, key), vals in zip(slots, host):
                holder[key] = vals
        final = self.fqn_sites(model)
        sites = []
        merged: dict[str, dict] = {}
        for site in self.sites.values():
            fid, fmodule = final[site.id]
            if fid in merged:
                # the same site reached through two outer modules (the harness called a submodule
                # directly, then the model): one site under its fully qualified name
                prev = merged[fid]
                prev["calls"] += site.calls
                prev["records"] += self._records(site)
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
                "records": self._records(site),
            }
            merged[fid] = entry
            sites.append(entry)
        return {
            "rank": dist.get_rank() if dist.is_initialized() else 0,
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "torch": _compat.TORCH_VERSION,
            "sites": sites,
            "params": params,
            "forced_calls": self.forced_calls,
            "low_precision": sorted(self.low_precision),
        }


def param_location(model: torch.nn.Module, name: str) -> dict:
    """Where a parameter is defined: the `self.<attr> =` line in the nearest user-defined
    module's __init__ (walking up from torch's own modules such as nn.Linear)."""
    import inspect
    import re

    parts = name.split(".")
    chain = [model]
    for p in parts[:-1]:
        chain.append(getattr(chain[-1], p, None) if chain[-1] is not None else None)
    attrs = parts[-1:]
    for depth in range(len(chain) - 1, -1, -1):
        mod = chain[depth]
        attr = attrs[0]
        if mod is None:
            break
        cls = type(mod)
        try:
            src_file = inspect.getsourcefile(cls)
        except TypeError:
            src_file = None
        if src_file and _is_user_file(src_file):
            try:
                lines, start = inspect.getsourcelines(cls)
            except (OSError, TypeError):
                lines, start = [], 1
            pat = re.compile(rf"self\.{re.escape(attr)}\s*(:[^=]*)?=(?!=)")
            for i, text in enumerate(lines):
                if pat.search(text):
                    return {"path": os.path.abspath(src_file), "line": start + i}
            return {"path": os.path.abspath(src_file), "line": start}
        if depth > 0:
            attrs = [parts[depth - 1]]
    return {}


def _ref_stats(full: torch.Tensor, ref: torch.Tensor | None) -> dict:
    """How a parameter's gradient compares with the one-rank reference's (one host copy):
    rel_diff, the largest difference relative to the reference's abs-max (None: no reference
    gradient); scale, [s, cos] with full ~= s * ref at cosine similarity cos (a gradient off by
    one factor on every rank, each rank keeping 1/k of it under a Replicate label, has cos ~ 1
    and s ~ 1/k; None where undefined)."""
    if ref is None:
        return {"rel_diff": None, "scale": None}
    if _SIM is not None:
        return _SIM.per_rank(full, lambda x: _ref_stats_plain(x, ref))
    return _ref_stats_plain(full, ref)


def _ref_stats_plain(full: torch.Tensor, ref: torch.Tensor) -> dict:
    a = full.detach().to("cpu", torch.float64)
    b = ref.detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        return {"rel_diff": float("inf"), "scale": None}
    if not a.numel():
        return {"rel_diff": 0.0, "scale": None}
    rel = float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)
    a, b = a.reshape(-1), b.reshape(-1)
    aa, bb, ab = float(a @ a), float(b @ b), float(a @ b)
    scale = None if bb <= 1e-300 or aa <= 1e-300 else [ab / bb, ab / (aa ** 0.5 * bb ** 0.5)]
    return {"rel_diff": rel, "scale": scale}


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
