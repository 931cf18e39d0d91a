"""Tensor fingerprints: the few numbers a check keeps of a gradient (or of a forward value).

A fingerprint is FP_LEN float64s computed on the tensor's device, with no host sync and no
collective, so the monitor can take one inside a backward hook; the verdicts compare them across
ranks (verdicts.N_HEAD is the length of FP_HEAD). `_ref_stats` compares a full gradient with the
one-rank reference run's.
"""

from __future__ import annotations

from typing import Any

import torch

# --backend sim (sim.py) installs its adapter here while it runs: every "local" tensor is then a
# LocalTensor holding one tensor per simulated rank, and the few places that turn tensors into
# numbers (here, the monitor's mesh coordinates, the payload's host copy, gradprobe) do it per
# simulated rank. None (the default) leaves every code path as it was. Read it as
# `fingerprints._SIM`: a name imported from here keeps the value it had at import time.
_SIM: Any = None

N_SAMPLES = 48  # sampled gradient values per fingerprint: enough to see a rank's slice
FP_HEAD = ("norm", "l1", "sum", "absmax", "hash")
FP_LEN = len(FP_HEAD) + N_SAMPLES

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
