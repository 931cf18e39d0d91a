from __future__ import annotations

from placement_lint.rule import RuntimeOnlyRule


class UnflaggedLocalConversion(RuntimeOnlyRule):
    """
    What it does
        Reported by `placement-lint confirm` for a `to_local()` / `full_tensor()` / style hook call
        that the monitor saw receive a rank-dependent gradient under a Replicate label, at a line
        no static finding covers (the static pass could not see the rank-dependent work, e.g.
        across files or through dynamic dispatch).

    Why it breaks the gradient
        Same as DTP101: the all-reduce the gradient needed is skipped and replicated weights
        upstream drift apart.

    Example
        h = helper_that_returns_local(x)   # to_local() inside, rank-dependent use elsewhere

    Use instead
        Pass `grad_placements=(Partial(),)` at the reported call.

    Fix safety
        No automatic fix: this finding comes from a run, and points at a symptom; the fix belongs
        at the exit the run confirmed.
    """

    CODE = "DTP903"
    SLUG = "unflagged-local-conversion"
    SUMMARY = "runtime: a DTensor exit whose gradient contradicts its label, where the static pass found nothing"
