from __future__ import annotations

from placement_lint.rule import RuntimeOnlyRule


class ReferenceGradientMismatch(RuntimeOnlyRule):
    """
    What it does
        Reported by `placement-lint confirm --reference` for every parameter whose gradient
        (`full_tensor()` of it) differs from the gradient of the same harness run on one rank,
        naming the module where the wrong gradient first appears (the innermost one whose output
        gradient matches the one-rank run while an input's does not); and at that module's
        `forward` itself when no site inside it was found bad, with the DTensor entries and exits
        inside it as related locations.

    Why it breaks the gradient
        An equality test across ranks cannot see every bug: a gradient can be identical on every
        rank and still wrong (a Shard-declared gradient that missed a reduce-scatter, a
        double count that is the same everywhere). The one-rank run is the ground truth.

    Example
        tokens.full_tensor()            # EP tokens, then per-rank experts: every rank ends up with
                                         # the same, wrong, gradient for w_in

    Use instead
        Fix the confirmed exit upstream; `--verify-fix` shows the gradients then match.

    Fix safety
        No automatic fix: this finding comes from a run, and points at a symptom; the fix belongs
        at the exit the run confirmed.
    """

    CODE = "DTP904"
    SLUG = "reference-gradient-mismatch"
    SUMMARY = "runtime (--reference): a parameter gradient differs from a one-rank run of the same harness"
