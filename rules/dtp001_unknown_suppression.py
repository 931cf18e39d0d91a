from __future__ import annotations

from placement_lint.findings import Confidence, Finding
from placement_lint.rule import Example, FileContext, Rule


class UnknownSuppression(Rule):
    """
    What it does
        Reports a name in a `# placement-lint: ignore[...]` (or `ignore-file[...]`) comment, or a
        `DTP` name in a `# noqa: ...` comment, that is no rule's code or slug.

    Why it breaks the gradient
        It does not by itself; but a misspelt suppression (`DTP1O1`, `to-local-without-grad`)
        silences nothing, and the reader believes the finding was looked at. Other linters' names
        in a noqa comment (`E501`) are theirs and are left alone.

    Example
        h = x.to_local()  # placement-lint: ignore[DTP1O1]

    Use instead
        The code or slug `placement-lint rules` lists: `# placement-lint: ignore[DTP101]`.

    Fix safety
        No automatic fix: which rule was meant is for the author to say.
    """

    CODE = "DTP001"
    SLUG = "unknown-suppression"
    SUMMARY = "a suppression comment names no rule (a misspelt code or slug silences nothing)"
    INVALID = [
        Example("h = x.to_local(grad_placements=(Partial(),))  # placement-lint: ignore[DTP1O1]  # expect: DTP001\n"),
        Example("h = x.to_local(grad_placements=(Partial(),))  # noqa: E501, DTP999  # expect: DTP001\n"),
    ]
    VALID = [
        Example("h = x.to_local()  # placement-lint: ignore[DTP101]\n"),
        Example("h = x.to_local()  # placement-lint: ignore[to-local-without-grad-placements]\n"),
        Example("h = x.to_local(grad_placements=(Partial(),))  # noqa: E501\n"),
        Example("# placement-lint: ignore-file[DTP101]\nh = x.to_local()\n"),
    ]

    def check(self, ctx: FileContext):
        from placement_lint.rule import all_rules

        known = {r.CODE.lower() for r in all_rules()} | {r.SLUG.lower() for r in all_rules()}
        for line, column, name in ctx.facts.get("suppression_names", ()):
            if name.lower() not in known:
                yield Finding(self.CODE, self.SLUG, ctx.path, line, column, line, column + len(name),
                              f"`{name}` in a suppression comment is no rule's code or slug: it silences "
                              "nothing (see `placement-lint rules`)", Confidence.HIGH)
