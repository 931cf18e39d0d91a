from __future__ import annotations

from placement_lint.rule import Example, Rule


class ParseError(Rule):
    """
    What it does
        Reports a file that placement-lint could not analyse: a syntax error, or bytes that are
        not UTF-8. The other files are still analysed.

    Why it breaks the gradient
        It does not; but a file that is skipped silently is a file whose bugs are never found, so
        the skip is reported rather than swallowed.

    Example
        def forward(self, x):
            return x.to_local(  # unbalanced parenthesis

    Use instead
        Fix the syntax error, or exclude the file (`exclude` in `[tool.placement-lint]`).

    Fix safety
        No automatic fix.
    """

    CODE = "DTP000"
    SLUG = "parse-error"
    SUMMARY = "a file could not be analysed (syntax error or undecodable bytes)"
    INVALID = [Example("h = x.to_local(  # expect: DTP000\n")]
    VALID = [Example("h = x.to_local(grad_placements=(Partial(),))\n")]

    def check(self, ctx):  # the engine reports parse errors itself, before any rule runs
        return ()
