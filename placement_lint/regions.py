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
confidence (see `TEST_FUNCTION_PREFIXES` and `_skippable_test`), so they cannot be reported there.

Block boundaries come from indentation (lines inside multi-line strings excluded), so a split
inside a bracket is still possible; such a block no longer parses, and the caller then falls
back to the full text. Blanking never changes a kept line.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from placement_lint.api import RANK_FUNCTIONS, RANK_METHODS, RANK_METHODS_WITH_ARGS, TEST_FUNCTION_PREFIXES
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

# "test code": api.TEST_FUNCTION_PREFIXES, shared with the rule that demotes its rank slices
_TEST_DEF = re.compile(r"(?:async\s+)?def\s+(?:" + "|".join(re.escape(p) for p in TEST_FUNCTION_PREFIXES) + r")")
# What makes a rank-relevant test function unsafe to skip (each would let it hold, or change in
# another function, a finding at medium or high; see _skippable_test):
#: a nested def or class: the sites of a nested def have its own symbol, which is not test code,
#: and a nested class is a class of the project index
_NESTED_DEF = re.compile(r"^([ \t]+)(?:async[ \t]+)?def[ \t]", re.MULTILINE)
_NESTED_CLASS = re.compile(r"^[ \t]+class[ \t]", re.MULTILINE)
_NESTED = re.compile(r"^([ \t]+)(?:(?:async[ \t]+)?def|class)[ \t]", re.MULTILINE)
#: a function-level import: it updates the file's import table, which later functions read
_LOCAL_IMPORT = re.compile(r"^[ \t]+(?:import|from)[ \t]", re.MULTILINE)
_TARGET = r"\*?[\w.]+(?:\[[^\]\n]*\])?"
_AUG = r"(?:[-+*/%@&|^]|//|<<|>>|\*\*)?=(?!=)"
# Assignments to `self.NAME` set class attributes, which methods analysed later read. Matched per
# line (only lines that mention `self.`): the targets of a plain, chained, annotated, augmented or
# tuple assignment, the target of a for or with statement. A line that ends a parenthesised
# multi-line target (`) = ...`) or a `self.` line continued by a backslash cannot be read
# line by line: `_self_assigned` then answers None (any attribute may be assigned).
_ASSIGN_TARGETS = re.compile(
    rf"[ \t]*(?:[\w.]+[ \t]*=[ \t]*)*[(\[]?[ \t]*(?:{_TARGET}[ \t]*,[ \t]*)*\*?self\.\w+[ \t]*"
    rf"(?:,[ \t]*{_TARGET}[ \t]*)*,?[ \t]*[)\]]?[ \t]*(?::[^=\n]*)?{_AUG}"
)
_FOR_OR_WITH_TARGET = re.compile(r"[ \t]*(?:async[ \t]+)?for[ \t].*\bself\.\w+.*[ \t]in\b|.*\bas[ \t]+[(\[]?[ \t]*(?:[\w.*]+[ \t]*,[ \t]*)*self\.")
_OPEN_TARGET_END = re.compile(rf"[ \t]*[)\]][ \t]*(?::[^=\n]*)?{_AUG}")
_IMPORT = re.compile(r"(?:import|from)\s")
_FROM_LOCAL_ALIAS = re.compile(r"\bfrom_local\s+as\b")
_HEADER = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)\b", re.MULTILINE)
_SELF_READ = re.compile(r"\bself\.(\w+)")
#: what a rank slice is written with: a subscript or narrow (chunk/split/unbind need a subscript)
_SLICE_SYNTAX = re.compile(r"\[|narrow")


# Comments and one-line strings are matched first so that a quote inside them is not taken for
# the start of a triple-quoted string. No string prefix (r, b, f): it does not change where a
# string ends, and a pattern that starts with one of #'" is scanned for at C speed.
_STRINGS = re.compile(
    r"#[^\n]*"
    r'|(?P<triple>"""(?:\\.|[^\\])*?"""|' r"'''(?:\\.|[^\\])*?''')"
    r'|"(?:\\.|[^"\\\n])*"' r"|'(?:\\.|[^'\\\n])*'",
    re.DOTALL,  # a backslash-newline inside a string is an escape too
)


def _string_lines(text: str) -> set[int]:
    """0-based numbers of the lines that start inside a triple-quoted string (not statements)."""
    inside: set[int] = set()
    line = pos = 0  # newlines counted up to pos (incrementally: one pass over the text)
    for m in _STRINGS.finditer(text):
        s, e = m.span()
        # a comment, or a string on one line: no substring is made for the many that are
        if text[s] == "#" or text.find("\n", s, e) == -1:
            continue
        line += text.count("\n", pos, s)  # triple-quoted, or a backslash-continued one
        pos = s
        inside.update(range(line + 1, line + text.count("\n", s, e) + 1))
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


def _carriers(chunk: str, attrs: bool) -> tuple[list[str], list[str]]:
    """Names assigned on lines that mention a token (`h = x.to_local()`,
    `self.rank = dist.get_rank()`): code that reads them is relevant too. Returned as
    (names carrying a strong token, names carrying a rank)."""
    strong: list[str] = []
    rank: list[str] = []
    done: set[int] = set()  # line starts already read (a line with both kinds carries the strong one)
    # only the lines that hold a token are matched against _ASSIGNED: tokens are rare, assignments not
    for pattern, out in ((_STRONG, strong), (_RANK, rank)):
        for t in pattern.finditer(chunk):
            a = chunk.rfind("\n", 0, t.start()) + 1
            if a in done:
                continue
            done.add(a)
            b = chunk.find("\n", t.end())
            m = _ASSIGNED.match(chunk, a, len(chunk) if b == -1 else b)
            if m is not None and bool(m.group(1)) == attrs:
                out.append(("self." if attrs else "") + m.group(2))
    return strong, rank


def _extend(base: re.Pattern, extra: list[str]) -> re.Pattern:
    if not extra:
        return base
    # no leading \b: a pattern that starts with an assertion is scanned for several times slower
    # (the gates over-approximate; `_rank_reaches_slice` checks the start of a name itself)
    return re.compile(base.pattern + "|" + "|".join(re.escape(e) + r"\b" for e in sorted(set(extra))))


class _Relevance:
    """Can a region hold a site? A strong token, or a rank together with slicing syntax."""

    def __init__(self, strong: list[str], rank: list[str]):
        self.strong = _extend(_STRONG, strong)
        self.rank = _extend(_RANK, rank)

    def __call__(self, text: str, precise: bool = True) -> bool:
        """`precise`: follow the rank's data flow (`_rank_reaches_slice`); a class is checked
        without it, as `_prune_class` then checks each of its methods with it."""
        if self.strong.search(text):
            return True
        return bool(self.rank.search(text)) and bool(_SLICING.search(text)) and (not precise or _rank_reaches_slice(text, self.rank))

    def extended(self, strong: list[str], rank: list[str]) -> "_Relevance":
        out = _Relevance([], [])
        out.strong = _extend(self.strong, strong)
        out.rank = _extend(self.rank, rank)
        return out


#: the targets of an assignment (plain, annotated, augmented, tuple) or of a for loop, on one line
#: (an `=` inside brackets is a keyword argument: `send(x, dst=r)` assigns nothing)
_LINE_TARGETS = re.compile(
    rf"[ \t]*(?:(?:async[ \t]+)?for[ \t]+(?P<loop>[^\n]*?)[ \t]in[ \t]|(?P<lhs>(?:\([^()=\n]*\)|[^=\n#(])*?){_AUG})"
)
_WORD = re.compile(r"[A-Za-z_]\w*")
#: names that never carry a rank of their own: a target `self.offset` makes `offset` a carrier
_NOT_CARRIERS = frozenset({"self", "cls", "int", "float", "str", "bool", "list", "tuple", "dict", "Tensor", "torch"})


#: comments and strings, to be blanked before looking for a rank's data flow (a docstring's
#: `>>> dist.get_rank()`, a help text); a string naming a rank variable (`os.environ["RANK"]`) is
#: kept in group `keep`: it is how such code spells its rank. Substituted with a template, not a
#: callback: C speed. A triple-quoted string collapses to nothing, newlines and all, which keeps
#: every logical line whole.
_CODE_ONLY = re.compile(
    r"""(?P<keep>"[A-Z_]*RANK[A-Z_]*"|'[A-Z_]*RANK[A-Z_]*')"""
    r"|#[^\n]*"
    r'|[rRbBfFuU]{0,2}(?:"""(?:\\.|[^\\])*?"""|' r"'''(?:\\.|[^\\])*?''')"
    r'|"(?:\\.|[^"\\\n])*"' r"|'(?:\\.|[^'\\\n])*'",
    re.DOTALL,
)


#: a subscript (not a list display): `x[`, `f(...)[`, `a[i][`; or narrow
_SUBSCRIPT = re.compile(r"[\w)\]][ \t]*\[|narrow")


def _statement_starts(code: str) -> list[int]:
    """Offsets in `code` (comments and strings blanked) where logical lines start: a line
    continues while a bracket is open or it ends with a backslash. Ends with len(code) + 1."""
    starts = [0]
    depth = pos = 0
    for ln in code.split("\n"):
        pos += len(ln) + 1
        depth += ln.count("(") + ln.count("[") + ln.count("{") - ln.count(")") - ln.count("]") - ln.count("}")
        if depth <= 0 and not ln.endswith("\\"):
            starts.append(pos)
            depth = 0
    if starts[-1] != pos:
        starts.append(pos)
    return starts


def _word_start(code: str, i: int) -> bool:
    """Does a match at `i` start a name (`r` in `Tensor` does not), or is it a rank token?"""
    return i == 0 or not (code[i - 1].isalnum() or code[i - 1] == "_") or _RANK.match(code, i) is not None


def _rank_reaches_slice(text: str, rank: re.Pattern) -> bool:
    """Can a value derived from a rank reach a subscript or `narrow` (the only syntax of the
    analyzer's rank slices) in `text`? The names assigned by a statement that mentions a rank (or
    a name already found), to a fixed point, carry it; a statement that mentions any of them
    must subscript or narrow. Comments and strings are blanked first (a docstring's
    `>>> dist.get_rank()`, a help text). Over-approximates (names by word, any subscript), so a
    block that can hold a rank slice is never dropped; it drops the many blocks that ask for a
    rank to log, branch or pass it on, and slice only unrelated data."""
    code = _CODE_ONLY.sub(r"\g<keep>", text)
    starts = _statement_starts(code)
    seen: set[int] = set()
    names: set[str] = set()
    pattern = rank
    while True:
        # the statements that mention the pattern, found by one scan of the whole text
        found = {bisect_right(starts, m.start()) - 1 for m in pattern.finditer(code) if _word_start(code, m.start())} - seen
        if not found:
            return False
        seen |= found
        new: set[str] = set()
        for i in found:
            a, b = starts[i], starts[i + 1] - 1
            if _SUBSCRIPT.search(code, a, b):
                return True
            m = _LINE_TARGETS.match(code, a, b)
            if m is not None:
                target = m.group("loop") or m.group("lhs") or ""
                if "[" not in target:
                    target = target.split(":", 1)[0]  # drop an annotation
                new.update(w for w in _WORD.findall(target) if w not in _NOT_CARRIERS)
        new -= names
        if not new:
            return False
        names |= new
        pattern = re.compile(r"(?:" + "|".join(sorted(map(re.escape, new))) + r")\b")


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
    through a rank slice and cannot change any other function's facts (`_skippable_test`); done
    only in files without a strong token, where rank slices are the only sites a block without
    one can hold (exits need `.to_local`/`.full_tensor`, styles and local_map their names or an
    import that spells them)."""
    lines = split_lines(text)
    keep: list[bool | str] = [True] * len(lines)  # False: blanked; a str: the line replaced by it
    in_string = _string_lines(text)
    top = _top_blocks(text, lines, in_string)
    chunks = ["".join(lines[s:e]) for s, e in top]
    carried = [_carriers(c, attrs=False) for c in chunks]
    if fields is None:
        fields = rank_fields(text)[0]
    # names the file fills from a rank API (`tp_rank=mesh.get_local_rank()`) carry a rank too
    relevant = _Relevance([n for sc, _ in carried for n in sc], [n for _, rc in carried for n in rc] + sorted(fields))
    skip = None
    if skip_test_rank and not _STRONG.search(text) and not ("from_local" in text and _FROM_LOCAL_ALIAS.search(text)):
        # nn.Parameter values are the one receiver that makes a test-code rank slice high: where the
        # file creates any, module-level statements must not (globals reach every function)
        has_param = "Parameter" in text
        module_param = has_param and any(
            "Parameter" in c for (s, e), c in zip(top, chunks) if not _DEF.match(f := _first_code_line(lines, s, e)) and not _IMPORT.match(f)
        )
        skip = _TestSkip(has_param, module_param)
    kept: list[tuple[int, int]] = []
    members_of: dict[int, list[tuple[int, int]]] = {}
    for (s, e), chunk in zip(top, chunks):
        first = next((ln.lstrip() for ln in lines[s:e] if ln.strip() and not ln.lstrip().startswith(("#", "@"))), "")
        if not first:
            continue  # comments and blank lines only
        is_def = bool(_DEF.match(first))
        if skip is not None and _skippable_test(lines, s, e, chunk, skip, _NO_ATTRS, method=False):
            skip.skipped.append((s, e))
            continue  # a test function whose findings can only be low
        if not relevant(chunk, precise=not first.startswith("class")):
            if not is_def and (e - s) <= MAX_PLAIN_STATEMENT_LINES:
                kept.append((s, e))  # imports and small module-level statements: name resolution
            continue
        kept.append((s, e))
        if first.startswith("class"):
            members = _prune_class(lines, s, e, relevant, keep, in_string, skip, drop_idle=not relevant.strong.search(chunk))
            if members is False:
                kept.pop()  # only a rank and some slicing, never together: nothing to find
            elif members is not None:
                members_of[s] = members
    if skip is not None and skip.skipped and not _parses(lines, skip.skipped):
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


class _TestSkip:
    """What decides, file-wide, whether a test function can be skipped; and the line ranges of
    those skipped (shared by every scope of the file)."""

    __slots__ = ("has_param", "outer_param", "skipped")

    def __init__(self, has_param: bool, outer_param: bool, skipped: list[tuple[int, int]] | None = None):
        self.has_param = has_param  # the file mentions `Parameter` at all
        self.outer_param = outer_param  # a scope the function reads names from mentions it
        self.skipped: list[tuple[int, int]] = [] if skipped is None else skipped

    def inner(self, outer_param: bool) -> _TestSkip:
        return _TestSkip(self.has_param, self.outer_param or outer_param, self.skipped)


def _parses(lines: list[str], ranges: list[tuple[int, int]]) -> bool:
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


def _skippable_test(
    lines: list[str], s: int, e: int, text: str, skip: _TestSkip, param_attrs: _Lazy, method: bool
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


class _Lazy:
    """A value computed on first use (a class's Parameter attributes: needed only when a
    skippable test method reads `self.` attributes)."""

    __slots__ = ("done", "fn", "value")

    def __init__(self, fn):
        self.fn, self.done, self.value = fn, False, None

    def get(self):
        if not self.done:
            self.value, self.done = self.fn(), True
        return self.value


_NO_ATTRS = _Lazy(frozenset)


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


def _param_attrs(texts: list[str]) -> frozenset | None:
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


def _prune_class(
    lines: list[str], s: int, e: int, relevant: _Relevance, keep: list[bool | str], in_string: set[int],
    skip: _TestSkip | None = None, drop_idle: bool = False,
) -> list[tuple[int, int]] | bool | None:
    """Blank the methods of the class at lines [s, e) that cannot hold a site; nested classes are
    pruned the same way. Returns the kept members as (0-based first line, indent), or None when
    the class is kept whole (its header mentions a token, e.g. a ParallelStyle subclass).
    `drop_idle` (a class that mentions a rank and slices, but no strong token): False when no
    member can hold a rank slice, so the caller drops the class."""
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
    firsts = [_first_code_line(lines, ms, me) for ms, me in members]
    param_attrs = _Lazy(lambda: _param_attrs(texts))
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
        relevant_member = member_relevant(member) if method or idle else True
        idle = idle and not relevant_member
        irrelevant = method and not relevant_member and not (strong_attrs or rank_attrs)
        if irrelevant or (skip is not None and _skippable_test(lines, ms, me, member, skip, param_attrs, method=True)):
            if not irrelevant:
                skipped = True
                skip.skipped.append((ms, me))  # type: ignore[union-attr]
            for i in range(ms, me):
                keep[i] = False
            continue
        if mfirst.startswith("class"):
            _prune_class(lines, ms, me, member_relevant, keep, in_string, inner)  # a nested class (a test base)
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

