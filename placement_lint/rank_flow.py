"""Can a rank reach a subscript? The data-flow half of region selection (regions.py), read off
the text: no parse.

A block that mentions a rank API and slices something is worth parsing for its rank slices only
when a value derived from the rank can reach a subscript or `narrow` in it. Names assigned by a
statement that mentions a rank carry it onward (to a fixed point), statements are logical lines
(brackets and backslashes joined), and comments and strings are blanked first. Everything
over-approximates (names by word, any subscript): a block that can hold a rank slice is never
dropped.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from placement_lint.prefilter import RANK_TOKENS

RANK = re.compile("|".join(re.escape(t) for t in RANK_TOKENS))
#: an assignment operator, augmented or not (not `==`)
AUG = r"(?:[-+*/%@&|^]|//|<<|>>|\*\*)?=(?!=)"

#: the targets of an assignment (plain, annotated, augmented, tuple) or of a for loop, on one line
#: (an `=` inside brackets is a keyword argument: `send(x, dst=r)` assigns nothing)
_LINE_TARGETS = re.compile(
    rf"[ \t]*(?:(?:async[ \t]+)?for[ \t]+(?P<loop>[^\n]*?)[ \t]in[ \t]|(?P<lhs>(?:\([^()=\n]*\)|[^=\n#(])*?){AUG})"
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
    return i == 0 or not (code[i - 1].isalnum() or code[i - 1] == "_") or RANK.match(code, i) is not None


def rank_reaches_slice(text: str, rank: re.Pattern) -> bool:
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
