"""Which test functions a medium-or-high run may leave unparsed (regions.select_blocks with
`skip_test_rank`).

The analyzer reports a rank slice in test code (`api.TEST_FUNCTION_PREFIXES`) at low unless the
sliced value is an nn.Parameter, so a test function whose only relevance is a rank slice can be
skipped when nothing it does can change another function's facts. The conditions are read off the
text (no parse); `skippable_test` documents each.
"""

from __future__ import annotations

import re

from placement_lint.api import TEST_FUNCTION_PREFIXES
from placement_lint.rank_flow import AUG

_DEF = re.compile(r"(async\s+def|def|class)\b")
# "test code": api.TEST_FUNCTION_PREFIXES, shared with the rule that demotes its rank slices
_TEST_DEF = re.compile(r"(?:async\s+)?def\s+(?:" + "|".join(re.escape(p) for p in TEST_FUNCTION_PREFIXES) + r")")
# What makes a rank-relevant test function unsafe to skip (each would let it hold, or change in
# another function, a finding at medium or high; see skippable_test):
#: a nested def or class: the sites of a nested def have its own symbol, which is not test code,
#: and a nested class is a class of the project index
_NESTED_DEF = re.compile(r"^([ \t]+)(?:async[ \t]+)?def[ \t]", re.MULTILINE)
_NESTED_CLASS = re.compile(r"^[ \t]+class[ \t]", re.MULTILINE)
_NESTED = re.compile(r"^([ \t]+)(?:(?:async[ \t]+)?def|class)[ \t]", re.MULTILINE)
#: a function-level import: it updates the file's import table, which later functions read
_LOCAL_IMPORT = re.compile(r"^[ \t]+(?:import|from)[ \t]", re.MULTILINE)
_TARGET = r"\*?[\w.]+(?:\[[^\]\n]*\])?"
# Assignments to `self.NAME` set class attributes, which methods analysed later read. Matched per
# line (only lines that mention `self.`): the targets of a plain, chained, annotated, augmented or
# tuple assignment, the target of a for or with statement. A line that ends a parenthesised
# multi-line target (`) = ...`) or a `self.` line continued by a backslash cannot be read
# line by line: `_self_assigned` then answers None (any attribute may be assigned).
_ASSIGN_TARGETS = re.compile(
    rf"[ \t]*(?:[\w.]+[ \t]*=[ \t]*)*[(\[]?[ \t]*(?:{_TARGET}[ \t]*,[ \t]*)*\*?self\.\w+[ \t]*"
    rf"(?:,[ \t]*{_TARGET}[ \t]*)*,?[ \t]*[)\]]?[ \t]*(?::[^=\n]*)?{AUG}"
)
_FOR_OR_WITH_TARGET = re.compile(r"[ \t]*(?:async[ \t]+)?for[ \t].*\bself\.\w+.*[ \t]in\b|.*\bas[ \t]+[(\[]?[ \t]*(?:[\w.*]+[ \t]*,[ \t]*)*self\.")
_OPEN_TARGET_END = re.compile(rf"[ \t]*[)\]][ \t]*(?::[^=\n]*)?{AUG}")
_HEADER = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)\b", re.MULTILINE)
_SELF_READ = re.compile(r"\bself\.(\w+)")
#: what a rank slice is written with: a subscript or narrow (chunk/split/unbind need a subscript)
_SLICE_SYNTAX = re.compile(r"\[|narrow")



class TestSkip:
    """What decides, file-wide, whether a test function can be skipped; and the line ranges of
    those skipped (shared by every scope of the file)."""

    __slots__ = ("has_param", "outer_param", "skipped")

    def __init__(self, has_param: bool, outer_param: bool, skipped: list[tuple[int, int]] | None = None):
        self.has_param = has_param  # the file mentions `Parameter` at all
        self.outer_param = outer_param  # a scope the function reads names from mentions it
        self.skipped: list[tuple[int, int]] = [] if skipped is None else skipped

    def inner(self, outer_param: bool) -> TestSkip:
        return TestSkip(self.has_param, self.outer_param or outer_param, self.skipped)


def parses(lines: list[str], ranges: list[tuple[int, int]]) -> bool:
    """Do the skipped functions parse (CPython's parser, no code generated)? A syntax error in one
    of them is a DTP000 finding of the file when they are not skipped, so the caller then selects
    without skipping."""
    parts = []
    for s, e in ranges:
        code = next((ln for ln in lines[s:e] if ln.strip() and not ln.lstrip().startswith("#")), "")
        if code[:1] in (" ", "\t"):
            parts.append("if 1:\n")  # a method: an indented block of its own
        parts.extend(lines[s:e])
        if not parts[-1].endswith("\n"):
            parts.append("\n")
    try:
        compile("".join(parts), "<skipped tests>", "exec", _ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


_ONLY_AST = 0x400  # ast.PyCF_ONLY_AST, without importing ast


def skippable_test(
    lines: list[str], s: int, e: int, text: str, skip: TestSkip, param_attrs: Lazy, method: bool
) -> bool:
    """Can the function at lines [s, e) be left out of a medium-or-high run? Only a test function
    (`TEST_FUNCTION_PREFIXES`) whose every possible finding is low and which changes no other
    function's facts. The analyzer reports a rank slice in test code at low unless the sliced
    value is an nn.Parameter (then high), and only sites whose symbol is the test function itself
    are test code. So the function must have: no nested class (a class of the project index), no
    nested def that could hold a slice (its symbol is its own); for a top-level function, no
    slice syntax in its decorators (evaluated in the module scope; a method's are only read for
    no_grad markers); no import (the file's import table), no `self.NAME` assignment (class
    attributes, read by later methods), no `from_local` (it marks rank slices made elsewhere as
    rewrapped); and where the file mentions `Parameter`, none in itself, none in the scopes it
    reads names from (`skip.outer_param`), and no `self.NAME` read that its class may have set
    to a Parameter (`param_attrs`; None: any attribute may be)."""
    header = next((i for i in range(s, e) if _DEF.match(lines[i].lstrip())), -1)
    if header < 0 or not _TEST_DEF.match(lines[header].lstrip()):
        return False
    if not method and _SLICE_SYNTAX.search("".join(lines[s:header])):
        return False
    body = "".join(lines[header + 1 : e])
    if "from_local" in text or _NESTED_CLASS.search(body) or _LOCAL_IMPORT.search(body):
        return False
    assigned = _self_assigned(text)
    if assigned is None or assigned:
        return False
    for m in _NESTED_DEF.finditer(body):
        if _SLICE_SYNTAX.search(_indented_block(body, m.start(), len(m.group(1)))):
            return False
    if skip.has_param:
        if "Parameter" in text or skip.outer_param:
            return False
        reads = _SELF_READ.findall(text)
        if reads:
            attrs = param_attrs.get()
            if attrs is None or not attrs.isdisjoint(reads):
                return False
    return True


class Lazy:
    """A value computed on first use (a class's Parameter attributes: needed only when a
    skippable test method reads `self.` attributes)."""

    __slots__ = ("done", "fn", "value")

    def __init__(self, fn):
        self.fn, self.done, self.value = fn, False, None

    def get(self):
        if not self.done:
            self.value, self.done = self.fn(), True
        return self.value


NO_ATTRS = Lazy(frozenset)


def _self_assigned(text: str) -> frozenset | None:
    """The NAMEs that `text` may assign as `self.NAME` (over-approximated: every `self.NAME` in an
    assignment's targets, or on a for/with line); None when a line cannot be read alone."""
    names: set[str] = set()
    if "self." not in text:
        return frozenset()
    for line in text.split("\n"):
        if "self." not in line:
            if (line.lstrip()[:1] in (")", "]")) and _OPEN_TARGET_END.match(line):
                return None  # the end of a parenthesised target spread over lines
            continue
        if line.rstrip().endswith("\\"):
            return None
        m = _ASSIGN_TARGETS.match(line) if "=" in line else None
        if m is not None:
            names.update(_SELF_READ.findall(m.group(0)))
        elif ("for" in line or "as" in line) and _FOR_OR_WITH_TARGET.match(line):
            names.update(_SELF_READ.findall(line))
        elif line.lstrip()[:1] in (")", "]") and _OPEN_TARGET_END.match(line):
            return None
    return frozenset(names)


def _indented_block(text: str, start: int, indent: int) -> str:
    """The statement starting at `start` (a line at `indent` columns) and the lines after it that
    are blank, comments or indented deeper."""
    pos = text.find("\n", start)
    while pos != -1:
        nxt = text.find("\n", pos + 1)
        line = text[pos + 1 : nxt if nxt != -1 else len(text)]
        stripped = line.lstrip(" \t")
        if stripped and not stripped.startswith("#") and len(line) - len(stripped) <= indent:
            return text[start : pos + 1]
        pos = nxt
    return text[start:]


def _without_nested(text: str) -> str:
    """`text` (one class member) without the defs and classes nested in it."""
    header = _HEADER.search(text)
    if header is None:
        return text
    body_start = text.find("\n", header.start()) + 1
    if body_start <= 0:
        return text
    out = [text[:body_start]]
    pos = body_start
    for m in _NESTED.finditer(text, body_start):
        if m.start() < pos:
            continue  # inside a block already cut
        out.append(text[pos : m.start()])
        pos = m.start() + len(_indented_block(text, m.start(), len(m.group(1))))
    out.append(text[pos:])
    return "".join(out)


def parameter_attrs(texts: list[str]) -> frozenset | None:
    """The attributes (`self.NAME`) that the members `texts` of a class may set to an
    nn.Parameter: those assigned by a member that mentions `Parameter`, then, to a fixed point,
    those assigned by a member that reads one already found. None: a member that matters
    assigns in a way that cannot be read line by line, so any attribute may be."""
    # `self` in a nested def is no attribute target for the analyzer (the def has no class), and
    # in a nested class it is that class's: neither hands a Parameter to this class's attributes
    members = []
    for t in texts:
        direct = _without_nested(t)
        members.append(("Parameter" in direct, set(_SELF_READ.findall(direct)), direct))
    found: set[str] = set()
    done = [False] * len(members)
    changed = True
    while changed:
        changed = False
        for i, (has_param, reads, direct) in enumerate(members):
            if not done[i] and (has_param or not found.isdisjoint(reads)):
                done[i] = changed = True
                assigned = _self_assigned(direct)
                if assigned is None:
                    return None
                found |= assigned
    return frozenset(found)
