"""Select the regions of a file that can hold a finding; each is parsed on its own.

Parsing dominates the cost of analysing a candidate file, and in a large file most top-level
definitions (and most methods of a large class) mention no trigger token. `select_blocks` returns
the top-level statements worth parsing, each with its own start line, and inside a kept class
blanks the methods that cannot matter line for line, so line and column numbers stay exact. Kept:
imports and other small module-level statements (name resolution, placement constants), every
top-level def/class that mentions a token (a rank token only together with slicing syntax), and
inside such a class its `__init__` (attribute placements), its non-method members, and the
methods that mention a token (all of them when the class header itself does, e.g. a
ParallelStyle subclass).

With `skip_test_rank` (a run whose threshold is medium or high), test functions whose only
relevance is a rank slice are dropped as well: the analyzer's rank slices in test code are low
confidence (see `TEST_FUNCTION_PREFIXES` and `skippable_tests.py`), so they cannot be reported there.

Block boundaries come from indentation (lines inside multi-line strings excluded), so a split
inside a bracket is still possible; such a block no longer parses, and the caller then falls
back to the full text. Blanking never changes a kept line.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from itertools import accumulate

from placement_lint.api import RANK_FUNCTIONS, RANK_METHODS, RANK_METHODS_WITH_ARGS
from placement_lint.prefilter import RANK_TOKENS, STRONG_TOKENS
from placement_lint.rank_flow import RANK as _RANK, rank_reaches_slice
from placement_lint.skippable_tests import NO_ATTRS, Lazy, TestSkip, parameter_attrs, parses, skippable_test

_STRONG = re.compile("|".join(re.escape(t) for t in STRONG_TOKENS))
#: what a rank-indexed slice needs besides a rank: a slice, an index by a rank name, narrow,
#: chunk or split. Code that asks for its rank but slices nothing cannot hold a rank slice.
_SLICING = re.compile(r"\[[^\]]{0,160}?(?::|rank)|narrow\(|chunk\(|split\(")
_CONTINUATION = re.compile(r"(else|elif|except|finally)\b")
_DEF = re.compile(r"(async\s+def|def|class)\b")
#: `NAME = ...token...`, `self.NAME = ...token...`, and the tuple forms (`a, self.b = x, y.to_local()`):
#: the names that carry a token's meaning onward. One `=` on the line (not `==`, not a chain)
_ASSIGNED = re.compile(r"^[ \t]*(?P<lhs>[\w.,()\[\]* \t]+?)\s*(?::[^=\n]*)?=[^=\n]*$", re.MULTILINE)
#: one target of a tuple: `NAME` or `self.NAME`, possibly starred
_TARGET = re.compile(r"\s*\*?\s*(self\.)?([A-Za-z_]\w*)\s*")


def _targets(lhs: str) -> list[tuple[bool, str]]:
    """(is `self.` attribute, name) of each plain target of an assignment's left side; none when
    its brackets do not balance (`f(a, b=x)` read from the line start is a keyword argument)."""
    if lhs.count("(") != lhs.count(")") or lhs.count("[") != lhs.count("]"):
        return []
    out = []
    for item in lhs.replace("(", " ").replace(")", " ").replace("[", " ").replace("]", " ").split(","):
        m = _TARGET.fullmatch(item)
        if m is not None:
            out.append((bool(m.group(1)), m.group(2)))
    return out
#: a module-level statement longer than this with no token is blanked (big tables, docs)
MAX_PLAIN_STATEMENT_LINES = 40

_IMPORT = re.compile(r"(?:import|from)\s")
_FROM_LOCAL_ALIAS = re.compile(r"\bfrom_local\s+as\b")

# One anchored match per multi-line string: the prefix consumes, possessively (no backtracking,
# no match object per item), code, comments, one-line strings and stray quotes; the group is the
# next string that spans lines (triple-quoted, or continued with a backslash). Comments and
# one-line strings are consumed first so that a quote inside them is not taken for the start of
# a string; a quote that starts no string on its line is consumed alone (as a regex scanning
# from each position would skip it). No string prefix (r, b, f): it does not change where a
# string ends. Matched from where the previous match ended, so the text is read once.
_MULTILINE_STRING = re.compile(
    r"""(?:[^#"']++|#[^\n]*+"""
    r"""|"(?!"")(?:\\[^\n]|[^"\\\n])*+"|'(?!'')(?:\\[^\n]|[^'\\\n])*+'"""
    r"""|"(?!(?:\\.|[^"\\\n])*")|'(?!(?:\\.|[^'\\\n])*'))*+"""
    r'''(?P<string>"""(?:\\.|[^\\])*?"""|''' r"'''(?:\\.|[^\\])*?'''"
    r'''|"(?:\\.|[^"\\\n])*"|''' r"'(?:\\.|[^'\\\n])*')",
    re.DOTALL,  # a backslash-newline inside a string is an escape too
)


def _string_lines(text: str) -> set[int]:
    """0-based numbers of the lines that start inside a multi-line string (not statements)."""
    inside: set[int] = set()
    line = pos = counted = 0  # newlines counted up to `counted` (incrementally: one pass)
    while (m := _MULTILINE_STRING.match(text, pos)) is not None:
        s, pos = m.span("string")
        line += text.count("\n", counted, s)
        counted = s
        inside.update(range(line + 1, line + text.count("\n", s, pos) + 1))
    return inside


def _blocks(lines: list[str], indent: int, start: int, end: int, skip: set[int] | frozenset = frozenset()) -> list[tuple[int, int]]:
    """[start, end) line ranges of the statements at exactly `indent` columns."""
    starts: list[int] = []
    pending_decorator = False
    for i in range(start, end):
        if i in skip:
            continue
        line = lines[i]
        stripped = line.lstrip(" \t")
        if not stripped or stripped[0] in "#\n\r":
            continue
        col = len(line) - len(stripped)
        if col != indent or stripped[0] in ")]}" or _CONTINUATION.match(stripped):
            continue
        if pending_decorator and (_DEF.match(stripped) or stripped.startswith("@")):
            pending_decorator = stripped.startswith("@")
            continue  # stacked decorators and the def belong to the first decorator's block
        pending_decorator = stripped.startswith("@")
        starts.append(i)
    if not starts:
        return []
    if starts[0] != start:
        starts[0] = start  # leading comments/blank lines join the first block
    return [(s, e) for s, e in zip(starts, starts[1:] + [end])]


#: the first character of a line at indent 0 that can start a statement
_TOP_LINE = re.compile(r"^[^ \t\r\n#]", re.MULTILINE)


def _top_blocks(text: str, lines: list[str], skip: set[int]) -> list[tuple[int, int]]:
    """`_blocks(lines, 0, 0, len(lines), skip)`, found by a regex over the text: only the lines
    at indent 0 are visited (a file's lines are mostly indented)."""
    starts: list[int] = []
    pending_decorator = False
    line = pos = 0
    for m in _TOP_LINE.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        if line in skip:
            continue
        stripped = lines[line]
        if stripped[0] in ")]}" or _CONTINUATION.match(stripped):
            continue
        if pending_decorator and (_DEF.match(stripped) or stripped.startswith("@")):
            pending_decorator = stripped.startswith("@")
            continue
        pending_decorator = stripped.startswith("@")
        starts.append(line)
    if not starts:
        return []
    starts[0] = 0  # leading comments/blank lines join the first block
    return [(s, e) for s, e in zip(starts, starts[1:] + [len(lines)])]


def _header_end(lines: list[str], s: int, e: int) -> int:
    """Index of the line holding the `:` that ends a def/class header (decorators included)."""
    for i in range(s, e):
        stripped = lines[i].lstrip()
        if _DEF.match(stripped) and lines[i].rstrip().endswith(":"):
            return i
    return -1


class _Hits:
    """Where a pattern matches in the file, as sorted start offsets: each region then asks
    whether a match starts inside it (a bisection), instead of scanning its text again. Every
    pattern here matches within one line, and regions are whole lines, so a match starts inside a
    region exactly when a search of the region's own text would find one."""

    __slots__ = ("starts",)

    def __init__(self, starts: list[int]):
        self.starts = starts

    @classmethod
    def of(cls, pattern: re.Pattern, text: str, a: int = 0, b: int | None = None) -> "_Hits":
        return cls([m.start() for m in pattern.finditer(text, a, len(text) if b is None else b)])

    @classmethod
    def of_tokens(cls, tokens: tuple[str, ...], text: str) -> "_Hits":
        """Where fixed tokens occur (str.find per token: C-speed substring search, faster than one
        regex alternation here; a token inside a longer one only adds a start on the same line)."""
        starts: list[int] = []
        for token in tokens:
            i = text.find(token)
            while i != -1:
                starts.append(i)
                i = text.find(token, i + 1)
        starts.sort()
        return cls(starts)

    def any(self, a: int, b: int) -> bool:
        i = bisect_left(self.starts, a)
        return i < len(self.starts) and self.starts[i] < b

    def within(self, a: int, b: int) -> list[int]:
        return self.starts[bisect_left(self.starts, a) : bisect_left(self.starts, b)]

    def merged(self, other: "_Hits") -> "_Hits":
        return _Hits(sorted(self.starts + other.starts)) if other.starts else self


def _carriers(text: str, strong: _Hits, rank: _Hits, a: int, b: int, attrs: bool) -> tuple[list[str], list[str]]:
    """Names assigned on lines of text[a:b] that mention a token (`h = x.to_local()`,
    `self.rank = dist.get_rank()`): code that reads them is relevant too. Returned as
    (names carrying a strong token, names carrying a rank)."""
    out: tuple[list[str], list[str]] = ([], [])
    done: set[int] = set()  # line starts already read (a line with both kinds carries the strong one)
    # only the lines that hold a token are matched against _ASSIGNED: tokens are rare, assignments not
    for hits, names in ((strong, out[0]), (rank, out[1])):
        for t in hits.within(a, b):
            start = text.rfind("\n", a, t) + 1 or a
            if start in done:
                continue
            done.add(start)
            end = text.find("\n", t, b)
            m = _ASSIGNED.match(text, start, b if end == -1 else end)
            if m is not None:
                names.extend(("self." if attrs else "") + name for on_self, name in _targets(m.group("lhs")) if on_self == attrs)
    return out


def _names(extra: list[str]) -> str:
    """The regex of carried names (each a whole word at its end)."""
    # no leading \b: a pattern that starts with an assertion is scanned for several times slower
    # (the gates over-approximate; `rank_reaches_slice` checks the start of a name itself)
    return "|".join(re.escape(e) + r"\b" for e in sorted(set(extra)))


def _extend(base: re.Pattern, extra: list[str]) -> re.Pattern:
    return re.compile(base.pattern + "|" + _names(extra)) if extra else base


def _plus(hits: _Hits, names: list[str], text: str, a: int, b: int) -> _Hits:
    """`hits` and where `names` occur in text[a:b]."""
    return hits.merged(_Hits.of(re.compile(_names(names)), text, a, b)) if names else hits


class _Relevance:
    """Can a region of the file hold a site? A strong token, or a rank together with slicing
    syntax. Tokens and carried names are found once in the file (`_Hits`); a region is given by
    offsets [a, b) into `text`."""

    def __init__(self, text: str, strong: _Hits, rank: _Hits, rank_pattern: "_RankPattern",
                 base: tuple[_Hits, _Hits]):
        self.text = text
        self.strong, self.rank = strong, rank  # tokens and carried names
        # the tokens' own hits, without carried names (a class header, the carriers of a class)
        self.base_strong, self.base_rank = base
        self.rank_pattern = rank_pattern  # the rank tokens and rank carriers (rank_reaches_slice)

    @classmethod
    def of(cls, text: str, strong: _Hits, rank: _Hits) -> "_Relevance":
        """The tokens alone (`strong`, `rank`: their hits in `text`); carried names are added
        with `extended`."""
        return cls(text, strong, rank, _RankPattern([]), (strong, rank))

    def __call__(self, a: int, b: int, precise: bool = True) -> bool:
        """`precise`: follow the rank's data flow (`rank_flow.rank_reaches_slice`); a class is checked
        without it, as `_prune_class` then checks each of its methods with it."""
        if self.strong.any(a, b):
            return True
        if not self.rank.any(a, b) or _SLICING.search(self.text, a, b) is None:
            return False
        return not precise or rank_reaches_slice(self.text[a:b], self.rank_pattern.compiled())

    def extended(self, strong_names: list[str], rank_names: list[str], a: int, b: int) -> "_Relevance":
        """This relevance with more carried names, for the region text[a:b] (the file, or a
        class's members)."""
        return _Relevance(self.text, _plus(self.strong, strong_names, self.text, a, b),
                          _plus(self.rank, rank_names, self.text, a, b), self.rank_pattern.plus(rank_names),
                          (self.base_strong, self.base_rank))


class _RankPattern:
    """The rank tokens and the rank carriers as one regex, compiled only if a region needs the
    rank's data flow followed (few do)."""

    __slots__ = ("names", "_compiled")

    def __init__(self, names: list[str]):
        self.names, self._compiled = names, None

    def plus(self, names: list[str]) -> "_RankPattern":
        return _RankPattern(self.names + names) if names else self

    def compiled(self) -> re.Pattern:
        if self._compiled is None:
            self._compiled = _extend(_RANK, self.names)
        return self._compiled


#: how a rank call is spelled: `get_rank(`, `.rank(`, ... (str.find targets: no regex over the file)
_RANK_CALLS = tuple(sorted(f".{n}(" if n == "rank" else f"{n}(" for n in RANK_FUNCTIONS | RANK_METHODS | RANK_METHODS_WITH_ARGS))
#: `name = <expression ending where the rank call starts>` on the same line
_FIELD_BEFORE = re.compile(r"\b([A-Za-z_]\w*)\s*(?::[^=\n]*)?=\s*[\w.\[\]\"' ]*$")


def rank_fields(text: str) -> tuple[frozenset, frozenset]:
    """Fields the file fills straight from a rank call: keyword arguments
    (`ParallelInfo(tp_rank=tp_mesh.get_local_rank())`) and attributes (`obj.ep_rank =
    dist.get_rank(g)`); an attribute read by that name elsewhere in the file holds a rank. Plain
    local names are not fields (their own block already shows the rank call). Read off the text
    around each rank call (few per file), so no tree walk is needed. Returns (keyword fields,
    attribute fields): region selection needs only the first (attributes of `self` are carried
    class by class, see _carriers), the analyzer both."""
    keywords: set[str] = set()
    attributes: set[str] = set()
    if "rank" not in text and "coordinate" not in text:
        return frozenset(), frozenset()  # no rank call can be there
    for call in _RANK_CALLS:
        i = text.find(call)
        while i != -1:
            at = i + 1 if call[0] == "." else i  # `.rank(`: the expression ends at the dot's receiver
            before = _FIELD_BEFORE.search(text, text.rfind("\n", 0, i) + 1, at)
            if before is not None:
                j = before.start(1) - 1
                while j >= 0 and text[j] in " \t\r\n\\":
                    j -= 1
                if j >= 0 and text[j] in "(,":
                    keywords.add(before.group(1))
                elif j >= 0 and text[j] == ".":
                    attributes.add(before.group(1))
            i = text.find(call, i + len(call))
    return frozenset(keywords), frozenset(attributes)


def split_lines(text: str) -> list[str]:
    # split on "\n" only: str.splitlines also splits on form feeds and other characters that
    # Python source does not treat as line breaks, which would shift every later line
    lines = text.split("\n")
    return [ln + "\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def select_blocks(text: str, skip_test_rank: bool = False,
                  fields: frozenset | None = None) -> list[tuple[int, str, list[tuple[int, int]] | None]]:
    """The top-level blocks that can hold a finding, each as (1-based start line, its text, its
    kept class members), with the irrelevant methods of a kept class blanked line for line. Every
    block is a whole top-level statement (with its decorators and leading comments), so it parses
    on its own. For a class split into members, the members kept are listed in order as
    (0-based line of the statement's first line, indent): positions can then be computed for one
    method instead of the whole class.

    `skip_test_rank`: also drop the test functions (top-level or methods) that are relevant only
    through a rank slice and cannot change any other function's facts (`skippable_tests.skippable_test`); done
    only in files without a strong token, where rank slices are the only sites a block without
    one can hold (exits need `.to_local`/`.full_tensor`, styles and local_map their names or an
    import that spells them)."""
    lines = split_lines(text)
    keep: list[bool | str] = [True] * len(lines)  # False: blanked; a str: the line replaced by it
    in_string = _string_lines(text)
    top = _top_blocks(text, lines, in_string)
    chunks = ["".join(lines[s:e]) for s, e in top]
    offsets = list(accumulate(map(len, lines), initial=0))  # line -> offset of its start in text
    strong, rank = _Hits.of_tokens(STRONG_TOKENS, text), _Hits.of_tokens(RANK_TOKENS, text)
    carried_strong, carried_rank = _carriers(text, strong, rank, 0, len(text), attrs=False) if top else ([], [])
    if fields is None:
        fields = rank_fields(text)[0]
    # names the file fills from a rank API (`tp_rank=mesh.get_local_rank()`) carry a rank too
    relevant = _Relevance.of(text, strong, rank).extended(carried_strong, carried_rank + sorted(fields), 0, len(text))
    skip = None
    if skip_test_rank and not _STRONG.search(text) and not ("from_local" in text and _FROM_LOCAL_ALIAS.search(text)):
        # nn.Parameter values are the one receiver that makes a test-code rank slice high: where the
        # file creates any, module-level statements must not (globals reach every function)
        has_param = "Parameter" in text
        module_param = has_param and any(
            "Parameter" in c for (s, e), c in zip(top, chunks) if not _DEF.match(f := _first_code_line(lines, s, e)) and not _IMPORT.match(f)
        )
        skip = TestSkip(has_param, module_param)
    kept: list[tuple[int, int]] = []
    members_of: dict[int, list[tuple[int, int]]] = {}
    for (s, e), chunk in zip(top, chunks):
        first = next((ln.lstrip() for ln in lines[s:e] if ln.strip() and not ln.lstrip().startswith(("#", "@"))), "")
        if not first:
            continue  # comments and blank lines only
        is_def = bool(_DEF.match(first))
        if skip is not None and skippable_test(lines, s, e, chunk, skip, NO_ATTRS, method=False):
            skip.skipped.append((s, e))
            continue  # a test function whose findings can only be low
        if not relevant(offsets[s], offsets[e], precise=not first.startswith("class")):
            if not is_def and (e - s) <= MAX_PLAIN_STATEMENT_LINES:
                kept.append((s, e))  # imports and small module-level statements: name resolution
            continue
        kept.append((s, e))
        if first.startswith("class"):
            members = _prune_class(lines, offsets, s, e, relevant, keep, in_string, skip,
                                   drop_idle=not relevant.strong.any(offsets[s], offsets[e]))
            if members is False:
                kept.pop()  # only a rank and some slicing, never together: nothing to find
            elif members is not None:
                members_of[s] = members
    if skip is not None and skip.skipped and not parses(lines, skip.skipped):
        return select_blocks(text, fields=fields)
    return [
        (
            s + 1,
            "".join(
                ln if keep[i] is True else keep[i] if keep[i] else ("\n" if ln.endswith("\n") else "")
                for i, ln in zip(range(s, e), lines[s:e])
            ),
            members_of.get(s),
        )
        for s, e in kept
    ]


def all_blocks(text: str) -> list[tuple[int, str, list[tuple[int, int]] | None]]:
    """Every top-level statement as its own block, in select_blocks' form (1-based start line,
    text, a class's members): the whole file, parsed in pieces so that positions need
    code-generating only the blocks, and in a class only the methods, that hold a site (a large
    test utility applying a style in one method is not generated whole)."""
    lines = split_lines(text)
    in_string = _string_lines(text)
    out = []
    for s, e in _top_blocks(text, lines, in_string):
        members = None
        if _first_code_line(lines, s, e).startswith("class"):
            members = _members(lines, s, e, in_string)
        out.append((s + 1, "".join(lines[s:e]), members))
    return out


def _members(lines: list[str], s: int, e: int, in_string: set[int]) -> list[tuple[int, int]] | None:
    """(0-based first code line, indent) of every member of the class at lines [s, e)."""
    header = _header_end(lines, s, e)
    if header < 0:
        return None
    indent = next(
        (len(ln) - len(ln.lstrip(" \t")) for ln in lines[header + 1 : e] if ln.strip() and not ln.lstrip().startswith("#")),
        None,
    )
    if not indent:
        return None  # a one-line class body
    out = []
    for ms, me in _blocks(lines, indent, header + 1, e, in_string):
        first = next((i for i in range(ms, me) if lines[i].strip() and not lines[i].lstrip().startswith("#")), None)
        if first is not None:
            out.append((first, indent))
    return out


def _first_code_line(lines: list[str], s: int, e: int) -> str:
    """The first line of [s, e) that is neither blank, a comment nor a decorator, stripped."""
    return next((ln.lstrip() for ln in lines[s:e] if ln.strip() and not ln.lstrip().startswith(("#", "@"))), "")


def _prune_class(
    lines: list[str], offsets: list[int], s: int, e: int, relevant: _Relevance, keep: list[bool | str], in_string: set[int],
    skip: TestSkip | None = None, drop_idle: bool = False,
) -> list[tuple[int, int]] | bool | None:
    """Blank the methods of the class at lines [s, e) that cannot hold a site; nested classes are
    pruned the same way. Returns the kept members as (0-based first line, indent), or None when
    the class is kept whole (its header mentions a token, e.g. a ParallelStyle subclass).
    `drop_idle` (a class that mentions a rank and slices, but no strong token): False when no
    member can hold a rank slice, so the caller drops the class."""
    header = _header_end(lines, s, e)
    if header < 0 or relevant.base_strong.any(offsets[s], offsets[header + 1]):
        return None
    body_start = header + 1
    indent = next(
        (len(ln) - len(ln.lstrip(" \t")) for ln in lines[body_start:e] if ln.strip() and not ln.lstrip().startswith("#")),
        None,
    )
    if not indent:
        return None
    members = _blocks(lines, indent, body_start, e, in_string)
    texts = ["".join(lines[ms:me]) for ms, me in members]
    text = relevant.text
    attrs = [_carriers(text, relevant.base_strong, relevant.base_rank, offsets[ms], offsets[me], attrs=True) for ms, me in members]
    member_relevant = relevant.extended([n for sa, _ in attrs for n in sa], [n for _, ra in attrs for n in ra],
                                        offsets[s], offsets[e])
    firsts = [_first_code_line(lines, ms, me) for ms, me in members]
    param_attrs = Lazy(lambda: parameter_attrs(texts))
    inner = skip
    if skip is not None and skip.has_param:
        # a nested class's methods read this class's class-level names (the analyzer's scoping)
        inner = skip.inner(any("Parameter" in t for t, f in zip(texts, firsts) if not _DEF.match(f) and not _IMPORT.match(f)))
    kept: list[tuple[int, int]] = []
    skipped = False
    idle = drop_idle  # no member seen yet that can hold a rank slice
    for (ms, me), member, mfirst, (strong_attrs, rank_attrs) in zip(members, texts, firsts, attrs):
        # a method that sets an attribute from a token (`self.tp_rank = dist.get_rank(g)` in a
        # setup method) is where the attribute's meaning comes from: kept like __init__
        method = bool(_DEF.match(mfirst)) and "def __init__" not in mfirst
        relevant_member = member_relevant(offsets[ms], offsets[me]) if method or idle else True
        idle = idle and not relevant_member
        irrelevant = method and not relevant_member and not (strong_attrs or rank_attrs)
        if irrelevant or (skip is not None and skippable_test(lines, ms, me, member, skip, param_attrs, method=True)):
            if not irrelevant:
                skipped = True
                skip.skipped.append((ms, me))  # type: ignore[union-attr]
            for i in range(ms, me):
                keep[i] = False
            continue
        if mfirst.startswith("class"):
            _prune_class(lines, offsets, ms, me, member_relevant, keep, in_string, inner)  # a nested class (a test base)
        first_line = next(i for i in range(ms, me) if lines[i].strip() and not lines[i].lstrip().startswith("#"))
        kept.append((first_line, indent))
    if idle:
        return False
    if skipped and not kept:
        # every member left out, some as skipped tests: a `pass` keeps the class (a class of the
        # project index) parseable, on a line of the first member, so no line moves
        ms, me = members[0]
        first_line = next(i for i in range(ms, me) if lines[i].strip() and not lines[i].lstrip().startswith("#"))
        line = lines[first_line]
        keep[first_line] = line[: len(line) - len(line.lstrip(" \t"))] + "pass\n"
    return kept

