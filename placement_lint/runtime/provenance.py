"""Provenance: follow tensors derived from a monitored local tensor, record rank slices of them.

While the monitor is active a TorchFunctionMode sees every torch call. The outputs of a call on a
tracked tensor (views, reshapes, arithmetic, a helper's return value) are tracked in turn, labelled
by the site whose local tensor they came from; a slice of any of them (`x[r*n:(r+1)*n]`, `chunk`,
`narrow`...) is recorded as its own site at the slice's line. The mode also notes the precision
that matmul-like ops and casts run in (the reference comparison's tolerance follows it).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from placement_lint.runtime._compat import DTensor

if TYPE_CHECKING:
    from placement_lint.runtime.monitor import PlacementMonitor, _Site

# .busy: inside one of the monitor's wrappers (suppresses nested records); shared with monitor.py
_tls = threading.local()


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

