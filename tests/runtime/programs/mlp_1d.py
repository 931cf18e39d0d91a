"""Test program: a replicated activation leaves DTensor and meets a column-sharded weight.

`bug`: to_local() keeps the default Replicate label although each rank's gradient is only its
columns' share (planted bug). `fixed`: grad_placements=(Partial(),). `double`: declares Partial
where every rank computes the same gradient (replicated weight downstream).
"""
import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor


class Block(nn.Module):
    def __init__(self, mesh, mode, d=16, h=32):
        super().__init__()
        self.mesh = mesh
        self.mode = mode
        self.scale = nn.Parameter(distribute_tensor(torch.randn(d), mesh, [Replicate()]))
        self.w_in = nn.Parameter(distribute_tensor(torch.randn(d, h) * 0.3, mesh, [Shard(1)]))
        self.w_rep = nn.Parameter(distribute_tensor(torch.randn(d, d) * 0.3, mesh, [Replicate()]))

    def forward(self, x):
        h = x * self.scale
        if self.mode == "bug":
            hl = h.to_local()  # LINE_BUG
            u = torch.relu(hl @ self.w_in.to_local(grad_placements=[Shard(1)]))
        elif self.mode == "fixed":
            hl = h.to_local(grad_placements=[Partial()])  # LINE_FIXED
            u = torch.relu(hl @ self.w_in.to_local(grad_placements=[Shard(1)]))
        else:
            hl = h.to_local(grad_placements=[Partial()])  # LINE_DOUBLE
            u = torch.tanh(hl @ self.w_rep.to_local(grad_placements=[Replicate()]))
            return DTensor.from_local(u, self.mesh, [Replicate()]).sum()
        # each rank holds its columns: the output is Shard(1), the loss sums over all columns
        return DTensor.from_local(u, self.mesh, [Shard(1)]).sum()


class Model(nn.Module):
    def __init__(self, mesh, mode):
        super().__init__()
        self.block = Block(mesh, mode)

    def forward(self, x):
        return self.block(x)


def _run(ctx, mode):
    mesh = ctx.mesh((ctx.world_size if not ctx.reference else 1,), names=("tp",))
    ctx.seed()
    model = Model(mesh, mode)
    x = distribute_tensor(ctx.randn(8, 16), mesh, [Replicate()])
    loss = model(x)
    loss.backward()
    return model


def bug(ctx):
    return _run(ctx, "bug")


def fixed(ctx):
    return _run(ctx, "fixed")


def double(ctx):
    return _run(ctx, "double")


def boom(ctx):
    mesh = ctx.mesh((ctx.world_size,))
    if ctx.rank == 1:
        raise ValueError("planted failure on rank 1")
    import torch.distributed as dist
    dist.barrier()
    return None


def hang(ctx):
    import torch.distributed as dist
    if ctx.rank == 0:
        dist.barrier()  # rank 1 never joins: a mismatched collective
    else:
        import time
        time.sleep(3600)
    return None
