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

Block boundaries come from indentation (lines inside multi-line strings excluded), so a split
inside a bracket is still possible; such a block no longer parses, and the caller then falls
back to the full text. Blanking never changes a kept line.
"""

from __future__ import annotations

import re

from placement_lint.prefilter import RANK_TOKENS, STRONG_TOKENS

_STRONG = re.compile("|".join(re.escape(t) for t in STRONG_TOKENS))
_RANK = re.compile("|".join(re.escape(t) for t in RANK_TOKENS))
#: what a rank-indexed slice needs besides a rank: a slice, an index by a rank name, narrow,
#: chunk or split. Code that asks for its rank but slices nothing cannot hold a rank slice.
_SLICING = re.compile(r"\[[^\]]{0,160}?(?::|rank)|narrow\(|chunk\(|split\(")
_CONTINUATION = re.compile(r"(else|elif|except|finally)\b")
_DEF = re.compile(r"(async\s+def|def|class)\b")
#: `NAME = ...token...` / `self.NAME = ...token...`: a name that carries a token's meaning onward
_ASSIGNED = re.compile(r"^[ \t]*(self\.)?([A-Za-z_]\w*)\s*(?::[^=\n]*)?=[^=\n]*$", re.MULTILINE)
#: a module-level statement longer than this with no token is blanked (big tables, docs)
MAX_PLAIN_STATEMENT_LINES = 40


# Comments and one-line strings are matched first so that a quote inside them is not taken for
# the start of a triple-quoted string.
_STRINGS = re.compile(
    r"#[^\n]*"
    r'|(?P<triple>[rRbBfFuU]{0,2}(?:"""(?:\\.|[^\\])*?"""|' r"'''(?:\\.|[^\\])*?'''))"
    r'|"(?:\\.|[^"\\\n])*"' r"|'(?:\\.|[^'\\\n])*'",
    re.DOTALL,  # a backslash-newline inside a string is an escape too
)


def _string_lines(text: str) -> set[int]:
    """0-based numbers of the lines that start inside a triple-quoted string (not statements)."""
    inside: set[int] = set()
    for m in _STRINGS.finditer(text):
        if m.group(0)[0] != "#" and "\n" in m.group(0):  # triple-quoted, or a backslash-continued one
            first = text.count("\n", 0, m.start())
            inside.update(range(first + 1, first + m.group(0).count("\n") + 1))
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


def _header_end(lines: list[str], s: int, e: int) -> int:
    """Index of the line holding the `:` that ends a def/class header (decorators included)."""
    for i in range(s, e):
        stripped = lines[i].lstrip()
        if _DEF.match(stripped) and lines[i].rstrip().endswith(":"):
            return i
    return -1


def _carriers(chunk: str, attrs: bool) -> tuple[list[str], list[str]]:
    """Names assigned on lines that mention a token (`h = x.to_local()`,
    `self.rank = dist.get_rank()`): code that reads them is relevant too. Returned as
    (names carrying a strong token, names carrying a rank)."""
    strong: list[str] = []
    rank: list[str] = []
    if not (_STRONG.search(chunk) or _RANK.search(chunk)):
        return strong, rank  # no token, so no line carries one: skip the per-line scan
    for m in _ASSIGNED.finditer(chunk):
        if bool(m.group(1)) != attrs:
            continue
        name = ("self." if attrs else "") + m.group(2)
        if _STRONG.search(m.group(0)):
            strong.append(name)
        elif _RANK.search(m.group(0)):
            rank.append(name)
    return strong, rank


def _extend(base: re.Pattern, extra: list[str]) -> re.Pattern:
    if not extra:
        return base
    return re.compile(base.pattern + "|" + "|".join(re.escape(e) + r"\b" for e in sorted(set(extra))))


class _Relevance:
    """Can a region hold a site? A strong token, or a rank together with slicing syntax."""

    def __init__(self, strong: list[str], rank: list[str]):
        self.strong = _extend(_STRONG, strong)
        self.rank = _extend(_RANK, rank)

    def __call__(self, text: str) -> bool:
        return bool(self.strong.search(text)) or (bool(self.rank.search(text)) and bool(_SLICING.search(text)))

    def extended(self, strong: list[str], rank: list[str]) -> "_Relevance":
        out = _Relevance([], [])
        out.strong = _extend(self.strong, strong)
        out.rank = _extend(self.rank, rank)
        return out


def split_lines(text: str) -> list[str]:
    # split on "\n" only: str.splitlines also splits on form feeds and other characters that
    # Python source does not treat as line breaks, which would shift every later line
    lines = text.split("\n")
    return [ln + "\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def select_blocks(text: str) -> list[tuple[int, str, list[tuple[int, int]] | None]]:
    """The top-level blocks that can hold a finding, each as (1-based start line, its text, its
    kept class members), with the irrelevant methods of a kept class blanked line for line. Every
    block is a whole top-level statement (with its decorators and leading comments), so it parses
    on its own. For a class split into members, the members kept are listed in order as
    (0-based line of the statement's first line, indent): positions can then be computed for one
    method instead of the whole class."""
    lines = split_lines(text)
    keep = [True] * len(lines)
    in_string = _string_lines(text)
    top = _blocks(lines, 0, 0, len(lines), in_string)
    chunks = ["".join(lines[s:e]) for s, e in top]
    carried = [_carriers(c, attrs=False) for c in chunks]
    relevant = _Relevance([n for sc, _ in carried for n in sc], [n for _, rc in carried for n in rc])
    kept: list[tuple[int, int]] = []
    members_of: dict[int, list[tuple[int, int]]] = {}
    for (s, e), chunk in zip(top, chunks):
        first = next((ln.lstrip() for ln in lines[s:e] if ln.strip() and not ln.lstrip().startswith(("#", "@"))), "")
        if not first:
            continue  # comments and blank lines only
        is_def = bool(_DEF.match(first))
        if not relevant(chunk):
            if not is_def and (e - s) <= MAX_PLAIN_STATEMENT_LINES:
                kept.append((s, e))  # imports and small module-level statements: name resolution
            continue
        kept.append((s, e))
        if first.startswith("class"):
            members = _prune_class(lines, s, e, relevant, keep, in_string)
            if members is not None:
                members_of[s] = members
    return [
        (
            s + 1,
            "".join(ln if keep[i] else ("\n" if ln.endswith("\n") else "") for i, ln in zip(range(s, e), lines[s:e])),
            members_of.get(s),
        )
        for s, e in kept
    ]


def _prune_class(
    lines: list[str], s: int, e: int, relevant: _Relevance, keep: list[bool], in_string: set[int]
) -> list[tuple[int, int]] | None:
    """Blank the methods of the class at lines [s, e) that cannot hold a site; nested classes are
    pruned the same way. Returns the kept members as (0-based first line, indent), or None when
    the class is kept whole (its header mentions a token, e.g. a ParallelStyle subclass)."""
    header = _header_end(lines, s, e)
    if header < 0 or _STRONG.search("".join(lines[s : header + 1])):
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
    attrs = [_carriers(t, attrs=True) for t in texts]
    member_relevant = relevant.extended([n for sa, _ in attrs for n in sa], [n for _, ra in attrs for n in ra])
    kept: list[tuple[int, int]] = []
    for (ms, me), member in zip(members, texts):
        mfirst = next((ln.lstrip() for ln in lines[ms:me] if ln.strip() and not ln.lstrip().startswith(("#", "@"))), "")
        if _DEF.match(mfirst) and "def __init__" not in mfirst and not member_relevant(member):
            for i in range(ms, me):
                keep[i] = False
            continue
        if mfirst.startswith("class"):
            _prune_class(lines, ms, me, member_relevant, keep, in_string)  # a nested class (a test base)
        first_line = next(i for i in range(ms, me) if lines[i].strip() and not lines[i].lstrip().startswith("#"))
        kept.append((first_line, indent))
    return kept

