from __future__ import annotations

from placement_lint.rule import RuntimeOnlyRule


class DivergingReplicatedGradient(RuntimeOnlyRule):
    """
    What it does
        Reported by `placement-lint confirm` for every parameter that is Replicate on some mesh dim
        and whose gradient, after backward, differs across the ranks of that dim (Partial
        gradients are reduced first). The finding is at the parameter's definition.

    Why it breaks the gradient
        Replicated weights must receive the same gradient on every rank or the replicas drift apart
        at the next optimizer step. A difference means some DTensor exit upstream labelled a
        rank-dependent gradient Replicate (a bare `to_local()`, a style hook, a rank slice): the
        static findings confirmed in the same run point at it.

    Example
        self.gate = nn.Parameter(distribute_tensor(w, mesh, [Replicate()]))
        ...
        scores = F.linear(x, self.gate.to_local())   # then per-rank experts

    Use instead
        Fix the exit that the confirmed static finding names (usually
        `grad_placements=(Partial(),)`); `confirm --verify-fix` reruns with the fix and shows the
        gradients agree and match the one-rank reference.

    Fix safety
        No automatic fix: this finding comes from a run, and points at a symptom; the fix belongs
        at the exit the run confirmed.
    """

    CODE = "DTP901"
    SLUG = "diverging-replicated-gradient"
    SUMMARY = "runtime: a replicated parameter's gradient differs across the ranks of a replicated mesh dim"
