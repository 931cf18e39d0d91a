from __future__ import annotations

from placement_lint.rule import RuntimeOnlyRule


class DoubleCountedGradient(RuntimeOnlyRule):
    """
    What it does
        Reported by `placement-lint confirm` at a DTensor exit whose declared grad placement is
        Partial while every rank of that mesh dim received the same gradient; and at a
        `from_local(x, mesh, [Replicate()])` whose local tensor came out of an exit labelled
        Partial: its backward all-reduced this branch's share of the gradient (identical on every
        rank), and the exit's Partial label sums it again (the exit is the related location).

    Why it breaks the gradient
        Partial means "each rank holds a share: sum them". When every consumer downstream is
        replicated, each rank already holds the whole gradient, and the sum over-counts it by the
        mesh size: the opposite of the bug DTP101 finds, and just as silent. The branch case:
        the layer boundary's Partial label is right for its rank-dependent consumers (experts),
        but a router-like branch that re-enters DTensor as Replicate is reduced once by
        `from_local`'s backward and once more by the label.

    Example
        h = x.to_local(grad_placements=(Partial(),))   # x Replicate
        out = torch.tanh(h).sum()                     # replicated downstream

        x = xd.to_local(grad_placements=(Partial(),))  # the boundary: experts below are per rank
        scores = self.router(x)                         # the router's input hook:
                                                        #   DTensor.from_local(x, mesh, [Replicate()])

    Use instead
        Drop the grad placements (the default, the forward placement, is right here), or pass
        `(Replicate(),)` explicitly. For the branch: hand it the DTensor (`self.router(xd)`), so
        that nothing leaves and re-enters DTensor on the way and every branch is reduced once.

    Fix safety
        No automatic fix: this finding comes from a run, and points at a symptom; the fix belongs
        at the exit the run confirmed.
    """

    CODE = "DTP902"
    SLUG = "double-counted-gradient"
    SUMMARY = "runtime: a gradient labelled Partial that every rank computed in full (over-counted by the mesh size)"
