from __future__ import annotations

from placement_lint.findings import Confidence, Related
from placement_lint.rule import Example, FileContext, Rule


class ToLocalWithoutGradPlacements(Rule):
    """
    What it does
        Flags `dt.to_local()` and `dt.full_tensor()` calls without `grad_placements` whose forward
        placement is (or may be) Replicate or Partial, when the local result is used in
        differentiable code.

    Why it breaks the gradient
        `to_local()` does no communication in backward: it only *labels* the incoming gradient
        with `grad_placements`, defaulting to the forward placement (Replicate). When ranks did
        different work downstream of the local tensor (it met the local shard of a sharded
        weight, a rank slice, per-rank experts, an all-to-all), each rank's gradient is only its
        share, the true gradient is Partial, and the label "Replicate" makes DTensor skip the
        all-reduce. Nothing crashes; replicated weights upstream drift apart from the first step.
        For `full_tensor()` the default backward keeps only this rank's chunk of this rank's
        contribution.

    Example
        x = DTensor.from_local(x, mesh, [Replicate()])
        w = distribute_tensor(w, mesh, [Shard(0)])
        h = x.to_local() @ w.to_local().t()   # every rank computes a different slice of h

    Use instead
        h = x.to_local(grad_placements=(Partial(),)) @ w.to_local().t()

    Fix safety
        Unsafe. `Partial` is right only when ranks really did different work downstream; if
        every consumer is replicated, the gradient is already complete and Partial over-counts it
        by the mesh size. `placement-lint confirm` checks which on a real mesh (verdicts
        `confirmed` / `double-count`).

    Confidence
        high: the forward placement is Replicate/Partial (or the call gathers) and the local
        result meets rank-dependent data in the same scope, or in a project function it is passed
        to (in this module or another, any number of calls deep: the message names the callee and
        its line is a related location; a Shard DTensor passed in the same call counts when the
        callee meets that argument's local tensor). Data parallel: a parameter of another module
        materialised outside its forward (`model.lm_head.weight.full_tensor()`) that meets this
        function's input in a file that runs data-parallel (`fully_shard`, DDP, a `dp` mesh) is
        high with a known placement or a gather, medium otherwise. medium: the placement is known
        Replicate/Partial and the local result leaves the scope (returned, passed to code the
        analyzer cannot follow, stored), or the placement is unknown but it meets a Shard
        DTensor's local shard. low: nothing rank-dependent seen, also after following every
        consumer into the project's functions.
    """

    CODE = "DTP101"
    SLUG = "to-local-without-grad-placements"
    SUMMARY = "to_local()/full_tensor() without grad_placements where ranks may compute different gradients"
    FIX = "unsafe"

    INVALID = [
        Example(
            """
            import torch
            from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

            def expert_matmul(x, w, mesh):
                x = DTensor.from_local(x, mesh, [Replicate()])
                w = distribute_tensor(w, mesh, [Shard(0)])
                h = x.to_local()  # expect: DTP101 high
                return h @ w.to_local().t()
            """,
            "a replicated activation meets the local shard of a sharded weight",
        ),
        Example(
            """
            import torch.distributed as dist
            from torch.distributed.tensor import DTensor as DT, Shard

            def gather_tokens(tokens, mesh, n_local, experts, expert_ids):
                tokens = DT.from_local(tokens, mesh, [Shard(0)])
                full = tokens.full_tensor()  # expect: DTP101 high
                ep_rank = dist.get_rank()
                mine = full[expert_ids == ep_rank]
                return experts(mine)
            """,
            "a gathered tensor used for rank-dependent work",
        ),
        Example(
            """
            from functools import partial
            from torch.distributed.tensor import Replicate, distribute_tensor

            replicate = partial(distribute_tensor, placements=[Replicate()])

            def route(logits, mesh):
                g = replicate(logits, mesh)
                return g.to_local()  # expect: DTP101 medium
            """,
            "placement known through functools.partial; the local tensor leaves the function",
        ),
        Example(
            """
            import torch
            from torch import nn
            from torch.distributed._tensor import distribute_tensor, Replicate, Shard

            REPLICATE = (Replicate(),)

            class RowwiseBias(nn.Module):
                def __init__(self, mesh):
                    super().__init__()
                    self.weight = nn.Parameter(distribute_tensor(torch.randn(8, 8), mesh, [Shard(1)]))
                    self.bias = nn.Parameter(distribute_tensor(torch.randn(8), mesh, REPLICATE))

                def forward(self, x_local):
                    y = x_local @ self.weight.to_local().t()
                    return y + self.bias.to_local()  # expect: DTP101 high
            """,
            "placements from a module constant and constructor fields",
        ),
        Example(
            """
            import dataclasses
            import torch.distributed as dist
            from torch.distributed.tensor import DTensor, Replicate

            @dataclasses.dataclass
            class ParallelConfig:
                act: tuple

            CFG = ParallelConfig(act=(Replicate(),))

            def split(x, mesh, n):
                x = DTensor.from_local(x, mesh, CFG.act)
                h = x.to_local()  # expect: DTP101 high
                r = dist.get_rank()
                return h[r * n:(r + 1) * n]
            """,
            "placements read from a config object's field; the local result is sliced by rank",
        ),
        Example(
            {
                "moe/__init__.py": "",
                "moe/experts.py": """
                    def run_local_experts(x, w_local, expert_ids, first):
                        out = x * 0
                        for i in range(w_local.shape[0]):
                            mine = expert_ids == first + i
                            out = out + mine * (x @ w_local[i])
                        return out
                    """,
                "moe/layer.py": """
                    from torch import nn
                    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

                    from .experts import run_local_experts

                    class MoE(nn.Module):
                        def __init__(self, mesh, w):
                            super().__init__()
                            self.mesh = mesh
                            self.w = nn.Parameter(distribute_tensor(w, mesh, [Shard(0)]))

                        def forward(self, h, expert_ids, first):
                            x = DTensor.from_local(h, self.mesh, [Replicate()]).to_local()  # expect: DTP101 high
                            return self._experts(x, expert_ids, first)

                        def _experts(self, x, expert_ids, first):
                            return run_local_experts(x, self.w.to_local(), expert_ids, first)
                    """,
            },
            "the rank-dependent work is two calls away, in another module (followed through function summaries)",
        ),
        Example(
            """
            from torch.distributed.fsdp import fully_shard

            def chunked_loss(hidden, weight, labels):
                return ((hidden @ weight.t()).log_softmax(-1) * labels).sum()

            def train_step(model, hidden, labels):
                weight = model.lm_head.weight.full_tensor()  # expect: DTP101 high
                return chunked_loss(hidden, weight, labels)
            """,
            "data parallel: another module's parameter gathered outside its forward meets this rank's batch",
        ),
    ]
    VALID = [
        Example(
            """
            import torch.nn.functional as F
            from torch import nn
            from torch.distributed.tensor import DTensor, Replicate

            class Head(nn.Module):
                def __init__(self, mesh, dim):
                    super().__init__()
                    self.mesh = mesh
                    self.norm = nn.LayerNorm(dim)

                def forward(self, h):
                    x = DTensor.from_local(h, self.mesh, [Replicate()]).to_local()
                    return DTensor.from_local(self._project(x), self.mesh, [Replicate()])

                def _project(self, x):
                    return F.gelu(self.norm(x))
            """,
            "followed into the helper: only replicated work, and re-wrapped as Replicate",
        ),
        Example(
            """
            from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

            def expert_matmul(x, w):
                return x.to_local(grad_placements=(Partial(),)) @ w.to_local().t()
            """,
            "explicit grad_placements",
        ),
        Example(
            """
            from torch.distributed.tensor import distribute_tensor, Shard

            def shard_matmul(x, w, mesh):
                w = distribute_tensor(w, mesh, [Shard(0)])
                return x @ w.to_local().t()
            """,
            "to_local() of an all-Shard DTensor",
        ),
        Example(
            """
            def shapes(x):
                return x.to_local().shape
            """,
            "metadata only",
        ),
        Example(
            """
            import torch
            from torch.distributed.tensor import DTensor, Replicate

            def init(x, mesh):
                x = DTensor.from_local(x, mesh, [Replicate()])
                with torch.no_grad():
                    buf = x.to_local()
                    return buf * 2
            """,
            "no_grad region",
        ),
        Example(
            """
            import torch.nn.functional as F
            from torch.distributed.tensor import DTensor, Replicate

            def gate(x, w, mesh):
                w = DTensor.from_local(w, mesh, [Replicate()])
                scores = F.linear(x, w.to_local()).softmax(-1)
                return DTensor.from_local(scores, mesh, [Replicate()])
            """,
            "replicated downstream, re-wrapped as Replicate: the label is right",
        ),
        Example(
            """
            import torch

            def total_norm(params):
                norms = [p.grad.full_tensor().norm() for p in params]
                return torch.stack(norms).norm()
            """,
            "gradients and grad-norm code carry no gradient themselves",
        ),
        Example(
            """
            import torch

            def maybe_gather(w):
                if not torch.is_grad_enabled() or not w.requires_grad:
                    return w.full_tensor()
                return w
            """,
            "the branch that runs without autograd",
        ),
        Example(
            """
            import torch

            def test_same(a, b):
                assert torch.equal(a.full_tensor(), b.full_tensor())
            """,
            "a comparison carries no gradient",
        ),
        Example(
            """
            import torch.nn.functional as F

            def loss_fn(logits, labels):
                labels = labels.full_tensor()
                full = logits.full_tensor()
                return F.cross_entropy(full, labels)
            """,
            "integer labels; a loss of gathered logits is the same scalar on every rank",
        ),
    ]

    def check(self, ctx: FileContext):
        for site in ctx.sites("exit"):
            if site.get("guard") or not site.get("used"):
                continue
            if site.get("cls") and ctx.index.is_style(ctx.index.class_fqn(ctx.path, site["cls"])):
                continue  # a ParallelStyle hook: DTP102 reports it where the style is applied
            yield self.evaluate(ctx, site)

    def evaluate(self, ctx: FileContext, site: dict):
        api = site["api"]
        placements = site.get("placements")
        # full_tensor() gathers whatever the placement: with rank-dependent use that is enough
        # for high; for a tensor that merely leaves the scope, only a known placement says medium
        known_placement = placements is not None and bool({"R", "P"} & set(placements))
        known = api == "full_tensor" or known_placement
        meets = site.get("meets") or []
        escapes = site.get("escapes") or []
        call = f".{api}()"
        related = []
        calls = site.get("calls") or []
        # the local tensor passed to project functions: followed through their summaries
        callee = ctx.index.call_evidence(calls, ctx.path) if calls and not meets else None
        if callee is not None:
            why, cpath, cline, csym = callee
            meets = [f"{why} in `{csym}()`"]
        data_parallel = (not meets and site.get("foreign") and site.get("meets_input") and ctx.facts.get("dp_context"))
        if data_parallel:
            # a parameter of another module materialised outside its forward, combined with this
            # rank's batch in data-parallel code: the true gradient is a sum over the dp ranks
            confidence = Confidence.HIGH if known else Confidence.MEDIUM
            where = (site.get("meets_input_lines") or [None])[0]
            evidence = ("the local result (a parameter of another module, materialised outside its forward) meets "
                        "this function's input data" + (f" (line {where})" if where else "")
                        + " in data-parallel code, where each rank's batch differs")
            related = [Related(ctx.path, where, "meets this rank's input data")] if where else []
        elif meets:
            if known:
                confidence = Confidence.HIGH
            elif any("Shard DTensor" in m for m in meets):
                confidence = Confidence.MEDIUM  # unknown placement, but it meets a known shard
            else:
                # unknown placement meeting dispatch output or rank slices: expert and vocab
                # weights are typically Shard there, and then the bare label is right
                confidence = Confidence.LOW
            if callee is not None:
                where = (site.get("calls_lines") or [None])[0]
                evidence = (f"the local result is passed to `{csym}()`" + (f" (line {where})" if where else "")
                            + f", where it {why} ({cpath}:{cline})")
                related = [Related(cpath, cline, f"rank-dependent use in {csym}(): {why}")]
            else:
                where = site.get("meets_lines", [None])[0]
                evidence = f"the local result {meets[0]}" + (f" (line {where})" if where else "")
                related = [Related(ctx.path, ln, f"rank-dependent use: {why}") for ln, why in zip(site.get("meets_lines", []), meets)]
        elif escapes and all(e.startswith("passed to ") for e in escapes) and calls and ctx.index.calls_clean(calls, ctx.path):
            # every consumer is a project function we followed, and none does rank-dependent work
            confidence = Confidence.LOW
            evidence = "the local tensor is passed to project functions that do nothing rank-dependent with it"
        elif escapes:
            # `from_local(x, mesh, [Partial()]).full_tensor()` is the all-reduce idiom: its result
            # is genuinely replicated; only rank-dependent use (above) makes it suspect
            all_reduce_idiom = api == "full_tensor" and placements == ["P"]
            confidence = Confidence.MEDIUM if known_placement and not all_reduce_idiom else Confidence.LOW
            evidence = f"the local tensor is {escapes[0]}, so its consumers are not visible here"
        else:
            confidence = Confidence.LOW
            evidence = "no rank-dependent use is visible"
        names = {"R": "Replicate", "P": "Partial", "S": "Shard"}
        placement = "/".join(names.get(p, p) for p in placements) if placements else "unknown"
        if api == "full_tensor":
            lost = ("the default backward keeps only this rank's chunk of this rank's contribution "
                    "(no reduce-scatter)")
            fix = "full_tensor(grad_placements=[Partial()])"
        else:
            lost = (f"the gradient is labelled with the forward placement ({placement}), so if ranks "
                    "computed different gradients the all-reduce is skipped")
            fix = "to_local(grad_placements=(Partial(),))"
        message = f"`{call}` without grad_placements: {evidence}; {lost}. If ranks do different work downstream, write `{fix}`"
        return self.finding(ctx, site, message, confidence, related=related, fix=self.fix(site))

    @staticmethod
    def fix(site: dict) -> dict | None:
        """Insert the Partial label just before the call's closing parenthesis."""
        if site.get("pos") is None:
            return None  # first, position-free pass of the engine
        _, _, end_line, end_col = site["pos"]
        # one Partial() per mesh dim where the placements (so the mesh's rank) are known and
        # none is Shard (a Shard dim keeps its own label, which the fix cannot spell)
        kinds = site.get("placements")
        n = len(kinds) if isinstance(kinds, list) and kinds and all(k in ("R", "P") for k in kinds) else 1
        parts = ", ".join(["Partial()"] * n)
        value = f"[{parts}]" if site["api"] == "full_tensor" else f"({parts},)"
        text = ("grad_placements=" if not site.get("nargs") else ", grad_placements=") + value
        return {
            "applicability": "unsafe",
            "message": f"Declare the gradient Partial: grad_placements={value}",
            "edits": [{"line": end_line, "column": end_col - 1, "end_line": end_line, "end_column": end_col - 1, "content": text}],
            "imports": [["torch.distributed.tensor", "Partial"]],
        }
