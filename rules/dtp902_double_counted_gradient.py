from __future__ import annotations

from placement_lint.rule import RuntimeOnlyRule


class DoubleCountedGradient(RuntimeOnlyRule):
    """
    What it does
        Reported by `placement-lint confirm` at a DTensor exit whose declared grad placement is
        Partial while every rank of that mesh dim received the same gradient.

    Why it breaks the gradient
        Partial means "each rank holds a share: sum them". When every consumer downstream is
        replicated, each rank already holds the whole gradient, and the sum over-counts it by the
        mesh size: the opposite of the bug DTP101 finds, and just as silent.

    Example
        h = x.to_local(grad_placements=(Partial(),))   # x Replicate
        out = torch.tanh(h).sum()                     # replicated downstream

    Use instead
        Drop the grad placements (the default, the forward placement, is right here), or pass
        `(Replicate(),)` explicitly.

    Fix safety
        No automatic fix: this finding comes from a run, and points at a symptom; the fix belongs
        at the exit the run confirmed.
    """

    CODE = "DTP902"
    SLUG = "double-counted-gradient"
    SUMMARY = "runtime: a gradient labelled Partial that every rank computed in full (over-counted by the mesh size)"
