"""Test program: two ways the cross-rank comparison alone gets the wrong answer.

`scaled_bias` (planted bug): a row-parallel linear whose replicated bias each rank adds as 1/k of
itself, taken with a bare to_local(): every rank gets the same gradient, 1/k of the true one,
labelled Replicate. The ranks agree, so only a one-rank reference shows it. `scaled_bias_fixed`
labels that gradient Partial. `identical_shards`: a correct Partial label, but every rank
initialises its Shard(1) weight from the same seed, so the "per-rank" gradients coincide and look
like a double count. `distinct_shards`: the same with one global weight distributed.
"""
import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor


class RowParallel(nn.Module):
    def __init__(self, mesh, fixed, d=16, o=8):
        super().__init__()
        self.mesh = mesh
        self.fixed = fixed
        self.weight = nn.Parameter(distribute_tensor(torch.randn(d, o) * 0.3, mesh, [Shard(0)]))
        self.bias = nn.Parameter(distribute_tensor(torch.randn(o), mesh, [Replicate()]))

    def forward(self, x):
        k = self.mesh.size()
        xl = x.redistribute(self.mesh, [Shard(1)]).to_local()
        wl = self.weight.to_local()
        if self.fixed:
            bl = self.bias.to_local(grad_placements=[Partial()]) / k  # LINE_BIAS_FIXED
        else:
            bl = self.bias.to_local() / k  # LINE_SCALED_BIAS
        y = DTensor.from_local(xl @ wl + bl, self.mesh, [Partial()])
        return (y.redistribute(self.mesh, [Replicate()]) ** 2).sum()


def _row(ctx, fixed):
    mesh = ctx.mesh((ctx.world_size,), names=("tp",))
    ctx.seed()
    model = RowParallel(mesh, fixed)
    x = distribute_tensor(ctx.randn(4, 16), mesh, [Replicate()])
    model(x).backward()
    return model


def scaled_bias(ctx):
    return _row(ctx, False)


def scaled_bias_fixed(ctx):
    return _row(ctx, True)


class ColParallel(nn.Module):
    def __init__(self, mesh, same_on_every_rank, d=16, h=32):
        super().__init__()
        self.mesh = mesh
        if same_on_every_rank:
            # what DTensor random init does on a CPU mesh: each rank draws its shard from the same
            # generator state, so every rank's shard is the same numbers
            local = torch.randn(d, h // mesh.size()) * 0.3
            w = DTensor.from_local(local, mesh, [Shard(1)], run_check=False)
        else:
            w = distribute_tensor(torch.randn(d, h) * 0.3, mesh, [Shard(1)])
        self.w = nn.Parameter(w)
        self.scale = nn.Parameter(distribute_tensor(torch.randn(d), mesh, [Replicate()]))

    def forward(self, x):
        hl = (x * self.scale).to_local(grad_placements=[Partial()])  # LINE_PARTIAL
        u = torch.relu(hl @ self.w.to_local())
        return DTensor.from_local(u, self.mesh, [Shard(1)]).sum()


def _col(ctx, same):
    mesh = ctx.mesh((ctx.world_size,), names=("tp",))
    ctx.seed()
    model = ColParallel(mesh, same)
    x = distribute_tensor(ctx.randn(8, 16), mesh, [Replicate()])
    model(x).backward()
    return model


def identical_shards(ctx):
    return _col(ctx, True)


def distinct_shards(ctx):
    return _col(ctx, False)
