"""Test program: 2-D dp x tp mesh. Tokens are sharded over dp, a replicated activation leaves
DTensor on tp and meets a tp-column-sharded weight.

`bug`: to_local() labels the tp dim Replicate (planted). `fixed`: grad_placements (Shard(0), Partial()).
"""
import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor


class Block2D(nn.Module):
    def __init__(self, mesh, fixed, d=8, h=16):
        super().__init__()
        self.mesh = mesh
        self.fixed = fixed
        self.scale = nn.Parameter(distribute_tensor(torch.randn(d), mesh, [Replicate(), Replicate()]))
        self.w = nn.Parameter(distribute_tensor(torch.randn(d, h) * 0.3, mesh, [Replicate(), Shard(1)]))

    def forward(self, x):
        h = x * self.scale  # [Shard(0), Replicate()]
        if self.fixed:
            hl = h.to_local(grad_placements=[Shard(0), Partial()])
        else:
            hl = h.to_local()  # LINE_BUG_2D
        u = torch.tanh(hl @ self.w.to_local(grad_placements=[Partial(), Shard(1)]))
        return DTensor.from_local(u, self.mesh, [Shard(0), Shard(1)]).sum()


def _run(ctx, fixed):
    mesh = ctx.mesh((2, 2), names=("dp", "tp"))
    ctx.seed()
    model = Block2D(mesh, fixed)
    x = distribute_tensor(ctx.randn(8, 8), mesh, [Shard(0), Replicate()])
    model(x).backward()
    return model


def bug(ctx):
    return _run(ctx, False)


def fixed(ctx):
    return _run(ctx, True)
