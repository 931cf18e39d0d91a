"""Harnesses that break the way a hostile user's would, for tests/runtime/test_failure_matrix.py.

Every harness first starts a child process (`sleep`) and writes its pid to
$PL_TEST_PIDS/<harness>-rank<R>-<n>.pid: the test checks afterwards that none survived. Rank 0's
child stays in the rank's process group; rank 1's leaves it with setsid, as a daemon would.
"""
import os
import signal
import subprocess
import time

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor


def _spawn_child(ctx, name):
    folder = os.environ.get("PL_TEST_PIDS")
    child = subprocess.Popen(["sleep", "300"], start_new_session=(ctx.rank == 1))
    if folder:
        n = len([f for f in os.listdir(folder) if f.startswith(f"{name}-rank{ctx.rank}-")])
        with open(os.path.join(folder, f"{name}-rank{ctx.rank}-{n}.pid"), "w") as fh:
            fh.write(str(child.pid))
    return child


class Tiny(nn.Module):
    """A replicated activation meets a column-sharded weight. `buggy`: to_local() keeps the
    default Replicate label although each rank's gradient is only its columns' share (a real
    finding, so that --verify-fix has a fix to prove); else grad_placements=(Partial(),)."""

    def __init__(self, mesh, buggy=False):
        super().__init__()
        self.mesh = mesh
        self.buggy = buggy
        self.scale = nn.Parameter(distribute_tensor(torch.randn(8), mesh, [Replicate()]))
        self.w = nn.Parameter(distribute_tensor(torch.randn(8, 4) * 0.3, mesh, [Shard(1)]))

    def forward(self, x):
        if self.buggy:
            h = (x * self.scale).to_local()
        else:
            h = (x * self.scale).to_local(grad_placements=[Partial()])
        u = torch.relu(h @ self.w.to_local(grad_placements=[Shard(1)]))
        return DTensor.from_local(u, self.mesh, [Shard(1)]).sum()


def _tiny(ctx, buggy=False):
    mesh = ctx.mesh((2,), names=("tp",))  # (1,) in the --reference run
    ctx.seed()
    model = Tiny(mesh, buggy)
    model(distribute_tensor(ctx.randn(4, 8), mesh, [Replicate()])).backward()
    return model


def ok(ctx):
    """Runs to the end (the planted finding is confirmed, and its fix proven by --verify-fix)."""
    _spawn_child(ctx, "ok")
    return _tiny(ctx, buggy=True)


def returns_none(ctx):
    _tiny(ctx)
    return None  # the forgotten `return model`


def returns_loss(ctx):
    mesh = ctx.mesh((2,))
    ctx.seed()
    loss = Tiny(mesh)(distribute_tensor(ctx.randn(4, 8), mesh, [Replicate()]))
    loss.backward()
    return loss


def raises(ctx):
    _spawn_child(ctx, "raises")
    model = _tiny(ctx)
    if ctx.rank == 1:
        raise ValueError("planted failure on rank 1")
    return model


def killed(ctx):
    _spawn_child(ctx, "killed")
    model = _tiny(ctx)
    if ctx.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return model


def exits(ctx):
    _spawn_child(ctx, "exits")
    model = _tiny(ctx)
    if ctx.rank == 1:
        os._exit(3)
    return model


def hangs(ctx):
    _spawn_child(ctx, "hangs")
    model = _tiny(ctx)
    if ctx.rank == 1:
        time.sleep(300)  # rank 0 waits for it in the verdicts' all_gather
    return model
