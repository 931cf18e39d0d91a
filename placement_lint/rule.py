"""Rule framework: one class per rule, examples inside the rule drive its tests and its docs.

A rule never walks the filesystem or the syntax tree: it reads the *sites* the analyzer extracted
from a file (a pure function of the file's bytes, cached) plus the project index, and decides
whether each site is a finding, at which confidence, with which message.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import textwrap
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator

from placement_lint.findings import Confidence, Finding, Related

if TYPE_CHECKING:  # pragma: no cover
    from placement_lint.index import ProjectIndex


@dataclasses.dataclass(frozen=True)
class Example:
    """A source snippet for a rule's tests and `explain` page.

    `code` may be a string (one file, `example.py`) or a mapping of file name to source (for
    cross-file rules).  In INVALID examples, each expected finding is marked on its line with
    `# expect: DTP101` (optionally followed by the confidence: `# expect: DTP101 high`).
    """

    code: str | dict[str, str]
    note: str = ""

    def files(self) -> dict[str, str]:
        if isinstance(self.code, str):
            return {"example.py": textwrap.dedent(self.code).lstrip("\n")}
        return {name: textwrap.dedent(src).lstrip("\n") for name, src in self.code.items()}


EXPECT_RE = re.compile(r"#\s*expect:\s*((?:DTP\d{3}(?:\s+(?:high|medium|low))?[\s,]*)+)")
_EXPECT_ITEM_RE = re.compile(r"(DTP\d{3})(?:\s+(high|medium|low))?")


def expected_markers(source: str) -> list[tuple[int, str, str | None]]:
    """(line, code, confidence-or-None) for every `# expect:` marker in `source`."""
    out = []
    for lineno, text in enumerate(source.splitlines(), start=1):
        m = EXPECT_RE.search(text)
        if m:
            for code, conf in _EXPECT_ITEM_RE.findall(m.group(1)):
                out.append((lineno, code, conf or None))
    return out


@dataclasses.dataclass
class FileContext:
    """What a rule sees of one file."""

    path: str
    facts: dict[str, Any]
    index: "ProjectIndex"

    def sites(self, kind: str) -> Iterator[dict[str, Any]]:
        for site in self.facts.get("sites", ()):
            if site["kind"] == kind:
                yield site


class Rule:
    CODE: ClassVar[str]
    SLUG: ClassVar[str]
    SUMMARY: ClassVar[str]  # one line for `placement-lint rules`
    VALID: ClassVar[list[Example]] = []
    INVALID: ClassVar[list[Example]] = []
    #: fix applicability: None (no fix), "safe" or "unsafe" (changes semantics if the finding is wrong)
    FIX: ClassVar[str | None] = None
    #: reported by `placement-lint confirm` only (its examples are runtime harnesses, not snippets)
    RUNTIME_ONLY: ClassVar[bool] = False

    def check(self, ctx: FileContext) -> Iterable[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    # Helpers for rules -------------------------------------------------------------------
    def finding(
        self,
        ctx: FileContext,
        site: dict[str, Any],
        message: str,
        confidence: Confidence,
        related: list[Related] | None = None,
        fix: dict[str, Any] | None = None,
        at: list[int] | None = None,
    ) -> Finding:
        """A finding at `site`; `at` ([line, column]) moves its start to the part it is about
        (an argument), the site's full range still ending it."""
        # the first pass runs without positions (the engine then positions the files with findings)
        line, col, end_line, end_col = site["pos"] or (0, 0, 0, 0)
        if at and site["pos"]:
            line, col = at
        return Finding(
            code=self.CODE,
            slug=self.SLUG,
            path=ctx.path,
            line=line,
            column=col,
            end_line=end_line,
            end_column=end_col,
            message=message,
            confidence=confidence,
            symbol=site.get("symbol", ""),
            related=related or [],
            fix=fix,
        )

    @classmethod
    def doc(cls) -> str:
        return textwrap.dedent(cls.__doc__ or "").strip()


class RuntimeOnlyRule(Rule):
    """A code that `placement-lint confirm` reports from a run (DTP90x). The static pass never
    emits it: the class carries its documentation, for `explain`, `rules` and the docs."""

    RUNTIME_ONLY: ClassVar[bool] = True

    def check(self, ctx: FileContext) -> Iterable[Finding]:
        return ()


_REGISTRY: dict[str, type[Rule]] | None = None


def all_rules() -> list[type[Rule]]:
    """Every rule class, sorted by code. Rules register by living in `placement_lint.rules`."""
    global _REGISTRY
    if _REGISTRY is None:
        pkg = _rules_package()

        found: dict[str, type[Rule]] = {}
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            for obj in vars(mod).values():
                if isinstance(obj, type) and issubclass(obj, Rule) and obj is not Rule and obj.__module__ == mod.__name__:
                    if obj.CODE in found:
                        raise RuntimeError(f"rule code {obj.CODE} defined twice")
                    found[obj.CODE] = obj
        _REGISTRY = dict(sorted(found.items()))
    return list(_REGISTRY.values())


def _rules_package():
    """`placement_lint.rules`: installed from the top-level `rules/` folder (package-dir mapping).
    Run from a source checkout without installing, it is not importable by that name, so it is
    loaded from `rules/` beside the package."""
    try:
        import placement_lint.rules as pkg

        return pkg
    except ModuleNotFoundError:
        import importlib.util
        import sys
        from pathlib import Path

        init = Path(__file__).resolve().parent.parent / "rules" / "__init__.py"
        if not init.is_file():
            raise
        spec = importlib.util.spec_from_file_location("placement_lint.rules", init, submodule_search_locations=[str(init.parent)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["placement_lint.rules"] = pkg
        spec.loader.exec_module(pkg)
        return pkg


def rule_by_code(code: str) -> type[Rule]:
    for rule in all_rules():
        if rule.CODE == code:
            return rule
    raise KeyError(code)


def lookup(name: str) -> type[Rule] | None:
    """A rule by code (`DTP101`, case-insensitive) or slug (`to-local-without-grad-placements`)."""
    key = name.strip()
    for rule in all_rules():
        if rule.CODE.lower() == key.lower() or rule.SLUG == key.lower():
            return rule
    return None


def resolve_selectors(selectors: Iterable[str]) -> set[str]:
    """Codes named by selectors: a code, a slug, a code prefix (`DTP1`), or `ALL`.

    Raises ValueError naming the selector that matches no rule, so a typo in config is an error,
    not a silently disabled rule.
    """
    codes: set[str] = set()
    for sel in selectors:
        s = sel.strip()
        if not s:
            continue
        if s.upper() == "ALL":
            codes.update(r.CODE for r in all_rules())
            continue
        rule = lookup(s)
        if rule is not None:
            codes.add(rule.CODE)
            continue
        matched = {r.CODE for r in all_rules() if r.CODE.startswith(s.upper())}
        if not matched:
            raise ValueError(f"unknown rule selector {sel!r} (see `placement-lint rules`)")
        codes.update(matched)
    return codes
