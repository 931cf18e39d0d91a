from __future__ import annotations

from placement_lint.api import BATCH_NAMES, TEST_FUNCTION_PREFIXES
from placement_lint.findings import Confidence
from placement_lint.rule import Example, FileContext, Rule

_OPS = {
    "slice": "a slice",
    "index": "an index",
    "slice_assign": "a slice assignment",
    "index_assign": "an index assignment",
    "narrow": "`narrow`",
    "chunk": "`chunk(...)[rank]`",
    "split": "`split(...)[rank]`",
    "tensor_split": "`tensor_split(...)[rank]`",
    "unbind": "`unbind(...)[rank]`",
}


class ManualRankSlice(Rule):
    """
    What it does
        Flags slices, `narrow`, `chunk(...)[r]`, `split(...)[r]`, `tensor_split(...)[r]` and
        slice assignments whose position derives from this process's rank (`get_rank()`,
        `mesh.get_local_rank()`, `group.rank()`, names and attributes assigned from them,
        `offset = rank * n` arithmetic), on tensors in differentiable code.

    Why it breaks the gradient
        A rank-indexed slice of a replicated tensor computes the same forward as
        `redistribute(Shard(d))`, but its backward is a zero-padded gradient that is non-zero only
        in this rank's slice, where redistribute's backward would all-gather. Unless something
        downstream declares the gradient Partial, the replicated weights upstream receive
        rank-dependent gradients and drift apart.

    Example
        local_rank = mesh.get_local_rank()
        offset = local_rank * n
        x_local = x[offset:offset + n]

    Use instead
        x_local = DTensor.from_local(x, mesh, [Replicate()]).redistribute(mesh, [Shard(0)]).to_local()

    Fix safety
        No automatic fix: the DTensor rewrite depends on the mesh and the slice's dimension.

    Confidence
        high: the sliced tensor is a parameter or a DTensor. medium: the rank comes from a rank
        API (`get_rank(group)`, `get_group_rank`, `group.rank()`, `mesh.get_local_rank(dim)`,
        `mesh.get_coordinate()[d]`, `mesh._sym_get_coordinate(d)`, `RANK`/`LOCAL_RANK`, or a value
        or `self.` attribute derived from one in any method, through unpacking and arithmetic, or
        a field the file fills from one: `ParallelInfo(ep_rank=mesh.get_local_rank("ep"))`).
        low: the index is only named like a rank (`rank`, `tp_rank` parameters), or a cp/dp/sp
        rank slices a tensor the code says nothing about (model inputs: an intended data split).
        Names lower the confidence only there: a parameter or DTensor keeps it high whatever the
        names say. Nested functions, closures, lambdas and comprehensions are analysed with the
        names they capture.
        Not flagged: `no_grad` / `inference_mode` regions, `autograd.Function` bodies, integer or
        boolean tensors, Python lists.
    """

    CODE = "DTP201"
    SLUG = "manual-rank-slice"
    SUMMARY = "a rank-indexed slice stands in for redistribute(Shard(d)) and drops the backward all-gather"

    INVALID = [
        Example(
            """
            def split_tokens(x, mesh):
                local_rank = mesh.get_local_rank()
                n = x.shape[0] // mesh.size()
                offset = local_rank * n
                return x[offset:offset + n]  # expect: DTP201 medium
            """,
            "offset arithmetic from mesh.get_local_rank()",
        ),
        Example(
            """
            import torch
            import torch.distributed as dist
            from torch import nn

            class ShardedHead(nn.Module):
                def __init__(self, dim, tp):
                    super().__init__()
                    self.tp = tp
                    self.rank = dist.get_rank()
                    self.weight = nn.Parameter(torch.randn(dim, dim))

                def forward(self, x):
                    w = self.weight.chunk(self.tp, dim=0)[self.rank]  # expect: DTP201 high
                    return x @ w.t()
            """,
            "a replicated parameter chunked by a rank attribute",
        ),
        Example(
            """
            import torch.distributed as dist

            def my_part(h, n):
                return h.narrow(0, dist.get_rank() * n, n)  # expect: DTP201 medium
            """,
            "narrow",
        ),
        Example(
            """
            import dataclasses

            import torch.distributed as dist
            from torch import nn

            def split_hook(mesh, n):
                offset = mesh.get_local_rank() * n

                def _split(x):
                    return x[offset:offset + n]  # expect: DTP201 medium

                return _split

            def split_all(xs, mesh, n):
                r = mesh.get_local_rank()
                take = lambda x: x[r * n:(r + 1) * n]  # expect: DTP201 medium
                return [take(x) for x in xs]

            class Head(nn.Module):
                def setup(self, group):
                    self.tp_rank = dist.get_rank(group)

                def forward(self, h, n):
                    return h.narrow(-1, self.tp_rank * n, n)  # expect: DTP201 medium

            @dataclasses.dataclass
            class ParallelInfo:
                ep_size: int
                ep_rank: int

            def parallel_info(mesh):
                return ParallelInfo(ep_size=mesh.size(), ep_rank=mesh.get_local_rank("ep"))

            class Experts(nn.Module):
                def setup(self, mesh):
                    self.info = parallel_info(mesh)

                def forward(self, h, n):
                    return h.narrow(0, self.info.ep_rank * n, n)  # expect: DTP201 medium
            """,
            "a closure capturing the rank, a lambda, a rank attribute set outside __init__, and a field "
            "a factory fills from a rank API (ParallelDims-style)",
        ),
    ]
    VALID = [
        Example(
            """
            import torch
            import torch.distributed as dist

            def init_weight(w, tp):
                with torch.no_grad():
                    return w.chunk(tp)[dist.get_rank()].clone()
            """,
            "weight init under no_grad",
        ),
        Example(
            """
            import torch
            import torch.distributed as dist

            def my_ids(seq_len, n):
                ids = torch.randint(0, 100, (seq_len,))
                offset = dist.get_rank() * n
                return ids[offset:offset + n]
            """,
            "integer token ids",
        ),
        Example(
            """
            import torch.distributed as dist

            def my_size(sizes):
                split_sizes = [s * 2 for s in sizes]
                return split_sizes[dist.get_rank()]
            """,
            "a Python list",
        ),
        Example(
            """
            import torch
            import torch.distributed as dist

            class Scatter(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    r = dist.get_rank()
                    n = x.shape[0] // dist.get_world_size()
                    return x[r * n:(r + 1) * n]

                @staticmethod
                def backward(ctx, g):
                    return g
            """,
            "inside a custom autograd.Function",
        ),
        Example(
            """
            import torch.distributed as dist
            from torch.distributed._functional_collectives import all_gather_tensor_autograd

            def my_block(h, group, n):
                full = all_gather_tensor_autograd(h, 0, group)
                r = dist.get_rank(group)
                return full[r * n:(r + 1) * n]
            """,
            "slicing the output of a differentiable all-gather: its backward already reduce-scatters",
        ),
        Example(
            """
            def context_parallel_split(inputs_embeds, cp_mesh, c):
                cp_rank = cp_mesh.get_local_rank()
                return inputs_embeds.narrow(1, cp_rank * c, c)
            """,
            "context-parallel split of activations: the intended per-rank share (reduced by FSDP/DDP)",
        ),
        Example(
            """
            import torch
            import torch.distributed as dist

            def fake_shard(n):
                full = torch.randn(4 * n, 8)
                r = dist.get_rank()
                return full[r * n:(r + 1) * n]
            """,
            "a fresh tensor has no gradient history",
        ),
        Example(
            """
            class MoEStateDictAdapter:
                def from_hf(self, hf_state_dict, mesh, n):
                    r = mesh.get_local_rank()
                    return hf_state_dict["experts.w"][r * n:(r + 1) * n]
            """,
            "checkpoint conversion",
        ),
    ]

    def check(self, ctx: FileContext):
        for site in ctx.sites("rank_slice"):
            if site.get("guard") or site.get("rewrapped_as_shard"):
                continue  # no-grad code, or `from_local(x[my slice], mesh, [Shard(d)])`: a manual distribute
            if site["rank_source"] == "name":
                confidence = Confidence.LOW
            elif site["op"] in ("index", "index_assign") and site["receiver"] == "unknown":
                confidence = Confidence.LOW  # `x[rank]` on an unknown value is as often a list or dict
            elif site["receiver"] not in ("param", "dtensor") and (
                site["rank_source"] == "data"
                or site.get("receiver_name", "") in BATCH_NAMES
                or site.get("symbol", "").rsplit(".", 1)[-1].startswith(TEST_FUNCTION_PREFIXES)
            ):
                # data-parallel batch splitting (a cp/sp/dp rank, model inputs or targets, test
                # code): each rank's share of the data is intended, and the data-parallel
                # reduction over that mesh dim sums the gradients later. Names decide only here,
                # where the code says nothing of the tensor: a parameter or DTensor is evidence
                confidence = Confidence.LOW
            elif site["receiver"] in ("param", "dtensor"):
                confidence = Confidence.HIGH
            else:
                confidence = Confidence.MEDIUM
            op = _OPS.get(site["op"], site["op"])
            if site["op"] in ("slice_assign", "index_assign"):
                message = (
                    "a slice assignment at a rank-derived offset writes this rank's part into a full tensor by hand: "
                    "the gradient of the written value is only this rank's slice and no collective runs in backward. "
                    "Build the full tensor with DTensor (`DTensor.from_local(part, mesh, [Shard(d)]).full_tensor()`)"
                )
            else:
                message = (
                    f"{op} at a rank-derived position stands in for `redistribute(Shard(d))` but drops its backward "
                    "all-gather: the upstream gradient is zero outside this rank's slice, so replicated weights before it "
                    "get rank-dependent gradients. Use `DTensor.from_local(x, mesh, [Replicate()]).redistribute(mesh, "
                    "[Shard(d)]).to_local()`, or label the gradient Partial downstream"
                )
            yield self.finding(ctx, site, message, confidence)
