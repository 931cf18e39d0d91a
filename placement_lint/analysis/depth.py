"""The depth guard: what LibCST must never see, and code that needs a deeper stack.

LibCST's native parser recurses on the C stack and its time grows with nesting depth squared
(one statement nested d deep costs it ~d^2); our analysis and the position pass recurse in
Python. Measured (LibCST 1.9, CPython 3.11, 8 MiB stack; bench/hostile.py, bench/RESULTS.md
"Issue 11: deep code and big files"):
- LibCST's native parser segfaults at ~1,200 nested calls, 1,300 nested brackets (within 0.2 s),
  ~3,400 nested lambdas, ~8,100 nested `not`/unary minus, 10,000 chained `elif`s; a statement
  1,000 levels deep costs it 0.2 s (`+`, attributes) to 3.3 s (conditional expressions), 2,000
  chained `.f()` calls 33 s;
- CPython rejects more than 200 nested brackets and, in 3.11, ~3,000 levels of anything else
  (~1,480 chained calls);
- with Python's default 1,000 frames our analysis failed at 132 nested calls (positions), 322
  (first pass), 314 `+` terms and ~1,000 `elif`s.

So, per block of text about to be parsed (`check`, all blocks of a file: `check_blocks`):
- a scan at C speed (a regex strips strings and comments; bytes.translate and itertools give
  the bracket depth and the longest logical statement) costs ~20 ns a character. More than
  Python's 200 brackets: not analysed.
- only a block with brackets deeper than BRACKETS_SAFE, a logical statement longer than
  LONG_STATEMENT characters of code (blanks aside) or more than ELIF_SAFE `elif`s is parsed by CPython's own
  parser (compiled to an AST: nothing is imported or run) and measured: CPython rejecting it,
  an expression deeper than MAX_EXPR_DEPTH (a third of LibCST's lowest crash depth; at most a
  few seconds of its time), or deep statements whose LibCST cost (sum of depth^2 over the file)
  exceeds COST_BUDGET: not analysed, with the reason and line.
- what passes but is deep is parsed and analysed in a thread with a DEEP_STACK stack and a
  raised recursion limit (`run_deep`); the analysis also retries there on a RecursionError.
A statement the scan lets through unmeasured has at most LONG_STATEMENT characters of code and
BRACKETS_SAFE brackets: at most ~1,000 levels, which LibCST parses without crashing in well under
a second; a file of such statements costs at most a few times a normal file of its size.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from itertools import accumulate, compress, count, repeat
from operator import add, ge, sub
from typing import Any, Callable

#: CPython's tokenizer refuses more nested brackets ("too many nested parentheses")
PYTHON_MAX_BRACKETS = 200
#: brackets deeper than this send the block to the exact (AST) measure and the deep path
BRACKETS_SAFE = 30
#: a logical statement longer than this (characters of code but blanks: strings and comments not
#: counted) is measured
LONG_STATEMENT = 1000
#: more `elif`s than this in a block (a chain nests one level per elif) is measured
ELIF_SAFE = 200
#: the deepest expression analysed (AST levels; a call, subscript, display or conditional
#: expression counts two: see _WRAPPED)
MAX_EXPR_DEPTH = 1000
#: statements nested at most this deep cost nothing against the budget
COST_SAFE = 100
#: the most LibCST work (sum of depth^2 over statements deeper than COST_SAFE) one file may cost:
#: one statement 1,000 levels deep, or 25 at 200 (a few seconds of parsing)
COST_BUDGET = 1_000_000
#: the stack and recursion limit of the deep path (the stack is reserved, not touched, up front)
DEEP_STACK = 512 * 1024 * 1024
DEEP_RECURSION = 200_000
#: deeper than this (AST levels or brackets x 2), a block is parsed and analysed on the deep path
DEEP_FROM = 60

#: environment variable, for tests and debugging only: "off" disables the guard (LibCST then sees
#: anything, on the normal stack; tests/test_hostile_code.py uses it to crash the parser for real)
GUARD_ENV = "PLACEMENT_LINT_DEPTH_GUARD"

_ONLY_AST = 0x400  # ast.PyCF_ONLY_AST, without importing ast for normal files

# comments and string literals: removed before measuring (their brackets are text)
_STRIP = re.compile(
    # each string form an unrolled loop (no alternation per character): twice the naive speed
    r"#[^\n]*"
    r'|"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""'
    r"|'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''"
    r'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
    r"|'[^'\\\n]*(?:\\.[^'\\\n]*)*'",
    re.DOTALL,
)
# the exact scan, for the position of a refused bracket depth (rare): group 1 an opening bracket,
# 2 a closing one
_BRACKETS = re.compile(_STRIP.pattern + r"|([(\[{])|([)\]}])", re.DOTALL)
_NOT_BRACKET_OR_NL = bytes(b for b in range(256) if chr(b) not in "()[]{}\n")
# an opening bracket +1, a closing one -1, a newline 0 (each shifted by one: bytes are unsigned)
_DELTA = bytes.maketrans(b"([{)]}\n", b"\x02\x02\x02\x00\x00\x00\x01")
_BLANK_LINES = re.compile(rb"\n\n+")
_NL_FLAG = bytes.maketrans(b"\x00\x01\x02", b"\x00\x01\x00")
#: AST nodes that count two levels: those LibCST wraps once more (an Arg, Element,
#: SubscriptElement...), and conditional expressions (LibCST's slowest form: 900 nested took 11 s
#: and 850 MB where 900 `+` took under a second)
_WRAPPED = frozenset({"Call", "List", "Tuple", "Set", "Dict", "Subscript", "ListComp", "SetComp", "DictComp",
                      "GeneratorExp", "IfExp"})


def enabled() -> bool:
    return os.environ.get(GUARD_ENV, "").strip().lower() != "off"


class Verdict:
    """What `check` found: `error` (the file's DTP000: line, column, message) or None; `deep`:
    parse and analyse on the deep path; `heavy`: (depth, line) of each statement deeper than
    COST_SAFE (what they cost LibCST together is bounded per file: `check_blocks`)."""

    __slots__ = ("error", "deep", "heavy")

    def __init__(self, error: dict[str, Any] | None = None, deep: bool = False, heavy: tuple = ()):
        self.error, self.deep, self.heavy = error, deep, heavy


OK = Verdict()


def _n(k: int) -> str:
    return f"{k:,}"


def check_blocks(pieces: Any) -> Verdict:
    """The verdict on a file's blocks, (first line, text, ...) each: the first error by line, or
    an error when its deep statements together cost LibCST more than COST_BUDGET."""
    verdicts = [check(src, start) for start, src, *_ in pieces]
    errors = [v.error for v in verdicts if v.error]
    if errors:
        return Verdict(min(errors, key=lambda e: (e["line"], e["column"])))
    return _budget([h for v in verdicts for h in v.heavy], any(v.deep for v in verdicts))


def _budget(heavy: list[tuple[int, int]], deep: bool) -> Verdict:
    cost = sum(d * d for d, _ in heavy)
    if cost <= COST_BUDGET:
        return Verdict(deep=deep, heavy=tuple(heavy))
    d, line = max(heavy, key=lambda h: (h[0], -h[1]))  # the deepest, the first of those
    return Verdict({"line": line, "column": 1, "message":
                    f"{_n(len(heavy))} statements nested more than {COST_SAFE} levels deep (the deepest {_n(d)}, "
                    f"line {line}): too costly to parse ({_n(cost)} units of depth squared, limit "
                    f"{_n(COST_BUDGET)}); not analysed"})


def check(text: str, first_line: int = 1) -> Verdict:
    """The guard's verdict on `text`, a block starting at line `first_line` of its file.
    All but the rare exact measure runs at C speed (regex, bytes.translate, itertools)."""
    if not enabled():
        return OK
    if len(text) <= LONG_STATEMENT and text.count("(") + text.count("[") + text.count("{") <= BRACKETS_SAFE:
        return OK  # (most blocks: an import, a small function) nothing in it can be long or deep
    code = _STRIP.sub("", text).replace("\\\r\n", "").replace("\\\n", "")  # continuations join lines
    # blanks and blank lines dropped (a level of nesting takes a character at least, indentation
    # none; regions blanks the methods it drops line for line): brackets and lines are what count
    compact = _BLANK_LINES.sub(b"\n", code.encode("utf-8", "surrogatepass").translate(None, b" \t\f\r\v"))
    deltas = compact.translate(None, _NOT_BRACKET_OR_NL).translate(_DELTA)
    depths = list(map(sub, accumulate(deltas), count(1)))  # the bracket depth after each element
    brackets = max(depths, default=0)
    if brackets > PYTHON_MAX_BRACKETS:
        return _too_many_brackets(text, first_line)
    if len(compact) <= LONG_STATEMENT and brackets <= BRACKETS_SAFE and compact.count(b"elif") <= ELIF_SAFE:
        return OK  # (no statement can be longer than all of it)
    # the longest logical statement: a line continues the one before while a bracket is open
    offsets = [0, *map(add, accumulate(map(len, compact.split(b"\n"))), count(1))]  # (+1: the newline)
    at_newline = compress(depths, deltas.translate(_NL_FLAG))  # the depth at the end of each line
    starts = [0, *compress(count(1), map(ge, repeat(0), at_newline)), len(offsets) - 1]
    longest = max(map(sub, map(offsets.__getitem__, starts[1:]), map(offsets.__getitem__, starts[:-1])), default=0)
    if longest <= LONG_STATEMENT and brackets <= BRACKETS_SAFE and code.count("elif") <= ELIF_SAFE:
        return OK
    return _measure(text, first_line, brackets)


def _too_many_brackets(text: str, first_line: int) -> Verdict:
    """The error for brackets deeper than Python allows, with the line where they pass its limit."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        if m.lastindex == 1:
            depth += 1
            if depth > PYTHON_MAX_BRACKETS:
                pos = m.start()
                line = first_line + text.count("\n", 0, pos)
                deepest = depth
                for later in _BRACKETS.finditer(text, pos + 1):  # how deep it goes
                    depth += 1 if later.lastindex == 1 else -1 if later.lastindex == 2 else 0
                    deepest = max(deepest, depth)
                return Verdict({"line": line, "column": pos - text.rfind("\n", 0, pos), "message":
                                f"brackets nested {_n(deepest)} deep at line {line}: more than Python's limit of "
                                f"{PYTHON_MAX_BRACKETS} (too many nested parentheses); not analysed"})
        elif m.lastindex == 2 and depth:
            depth -= 1
    return _measure(text, first_line, PYTHON_MAX_BRACKETS)  # (the two scans disagree: measure)


def _measure(text: str, first_line: int, brackets: int) -> Verdict:
    """The exact measure, on CPython's AST (built at C speed; walked without recursion)."""
    import ast

    try:
        tree = compile(text, "<block>", "exec", _ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError):
        return Verdict(deep=brackets * 2 > DEEP_FROM)  # LibCST reports its own syntax error
    except (RecursionError, MemoryError) as exc:
        return Verdict({"line": first_line, "column": 1, "message":
                        f"nested too deep for Python's own parser ({type(exc).__name__}); not analysed"})
    expr, stmt, children = ast.expr, ast.stmt, ast.iter_child_nodes
    # character offset of each line: an expression spanning at most COST_SAFE characters is at
    # most that deep (a level takes a character at least) and need not be walked
    lines = [0, 0, *accumulate(len(line) + 1 for line in text.split("\n"))]
    deepest, deepest_at = 0, (1, 0)
    stmt_depth = 0
    heavy: list[tuple[int, int]] = []  # (expression depth, line) of statements deeper than COST_SAFE
    stack: list[tuple[Any, int]] = [(tree, 0)]  # statements (and other non-expressions), nesting
    while stack:
        node, sd = stack.pop()
        if isinstance(node, stmt):
            sd += 1
            stmt_depth = max(stmt_depth, sd)
        own = 0  # the deepest expression of this statement, walked on its own stack
        for child in children(node):
            if not isinstance(child, expr):
                stack.append((child, sd))
                continue
            if lines[child.end_lineno] + child.end_col_offset - lines[child.lineno] - child.col_offset <= COST_SAFE:
                continue
            inner: list[tuple[Any, int]] = [(child, 0)]
            while inner:
                e, d = inner.pop()
                if isinstance(e, expr):
                    d += 2 if type(e).__name__ in _WRAPPED else 1
                    if d > own:
                        own = d
                    if d >= deepest and (d > deepest or (e.lineno, e.col_offset) < deepest_at):
                        deepest, deepest_at = d, (e.lineno, e.col_offset)  # (the first of the deepest)
                inner.extend((c, d) for c in children(e))
        if own > COST_SAFE:
            heavy.append((own, first_line + getattr(node, "lineno", 1) - 1))
    line, col = first_line + deepest_at[0] - 1, deepest_at[1] + 1
    if deepest > MAX_EXPR_DEPTH:
        return Verdict({"line": line, "column": col, "message":
                        f"expression nested {_n(deepest)} levels deep at line {line} (limit {_n(MAX_EXPR_DEPTH)}; "
                        f"a call, subscript, display or conditional expression counts two): not analysed"})
    return _budget(heavy, max(deepest, 2 * brackets) > DEEP_FROM or stmt_depth > DEEP_FROM)


def run_deep(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a thread with a DEEP_STACK stack (an eighth of it where the system refuses
    that) and a recursion limit the stack can hold (DEEP_RECURSION for DEEP_STACK; restored
    after: the limit is the interpreter's). Exceptions propagate; no thread at all: RecursionError."""
    out: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            out.append((True, fn(*args)))
        except BaseException as exc:  # handed to the caller's thread
            out.append((False, exc))

    old_limit = sys.getrecursionlimit()
    for size in (DEEP_STACK, DEEP_STACK // 8):
        worker = threading.Thread(target=target, name="placement-lint-deep", daemon=True)
        # before start: a new thread takes the interpreter's limit when it starts
        sys.setrecursionlimit(max(old_limit, DEEP_RECURSION * size // DEEP_STACK))
        try:
            old_size = threading.stack_size(size)  # the size of threads started from now on
            try:
                worker.start()
            finally:
                threading.stack_size(old_size)
        except (RuntimeError, MemoryError, ValueError):
            sys.setrecursionlimit(old_limit)
            continue  # (a stack this size cannot be had here)
        try:
            worker.join()
        finally:
            sys.setrecursionlimit(old_limit)
        ok, value = out[0]
        if not ok:
            raise value
        return value
    raise RecursionError("no thread with a deeper stack could be started")
