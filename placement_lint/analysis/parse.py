"""From a file's selected blocks to its analysed facts: the depth guard, LibCST's parse (block by
block, or the whole text when a block does not parse alone), the two CPython-valid forms LibCST
rejects, and the deep path for code nested beyond the default stack (analysis/depth.py).

Every way a file cannot be analysed ends as {"error": {line, column, message}} (the file's DTP000)
with the reason, never as an exception: LibCST's own message and position when it rejects the
file, and whether Python itself accepts it (checked by compiling to an AST: nothing is run)."""

from __future__ import annotations

import re
from typing import Any, Sequence

from placement_lint.analysis import depth

#: a form feed in a line's indentation. CPython's tokenizer resets the indentation count at a form
#: feed; LibCST's does not (it then finds "no matching outer block for dedent" in valid code)
_FORM_FEED_INDENT = re.compile(r"^[ \t\f]*\f", re.MULTILINE)
#: a LibCST message is one line of this length at most (it can quote a whole line of the file)
MESSAGE_MAX = 240


class NeedsDeep(Exception):
    """The whole text turned out deep while parsing on the normal path: restart on the deep path."""


def facts(text: str, pieces: Sequence[tuple[int, str, Any]], positions: str, rank_fields: frozenset,
          part: tuple[int, int] | None = None) -> dict[str, Any]:
    """The analyzer's facts of `text` given its selected `pieces` (regions.select_blocks' form),
    or {"error": ...}. `part` (k, n): only the k-th of n shares of the file's lazily parsed
    functions (placement_lint/file_parts.py)."""
    verdict = depth.check_blocks(pieces)
    if verdict.error:
        return {"error": verdict.error}
    args = (text, pieces, positions, rank_fields, part)
    if not verdict.deep:
        try:
            return _facts(*args, deep=False)
        except NeedsDeep:
            pass
        except Exception as exc:
            # deeper than the default stack allows (the guard measures only what LibCST risks).
            # LibCST's position pass turns a RecursionError into a KeyError: look at the chain
            if not _recursion(exc):
                raise
    try:
        return depth.run_deep(_facts, *args, True)
    except (RecursionError, MemoryError) as exc:
        return {"error": {"line": 1, "column": 1, "message": f"nested too deep to analyse ({type(exc).__name__}); not analysed"}}


def _recursion(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 100:
        if isinstance(exc, RecursionError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _facts(text: str, pieces: Sequence[tuple[int, str, Any]], positions: str, rank_fields: frozenset,
           part: tuple[int, int] | None, deep: bool) -> dict[str, Any]:
    import libcst as cst

    from placement_lint.analysis.lazy import LazyMismatch
    from placement_lint.analyzer import analyze_blocks
    from placement_lint.cst_parse import parse_module

    # a big file's undecorated top-level defs are parsed when analysed (analysis/lazy.py)
    lazy: dict[int, tuple[str, str]] = {}
    if sum(len(src) for _, src, _ in pieces) >= LAZY_FROM:
        lazy = {i: (name, src) for i, (_, src, _) in enumerate(pieces) if (name := undecorated_def(src))}
    own = None
    if part is not None:
        from placement_lint.file_parts import share, unsplit

        if not lazy:
            return unsplit() if part[0] else {**_facts(text, pieces, positions, rank_fields, None, deep), **unsplit()}
        own = share(lazy, part)
    shifts: dict[int, int] = {}
    try:
        # each (relevant) top-level block parsed on its own: positions are then computed only for
        # the blocks that hold a site, never by code-generating the whole module
        blocks = [(start, None if i in lazy else parse_module(src), members) for i, (start, src, members) in enumerate(pieces)]
        try:
            return analyze_blocks(blocks, positions=positions, rank_fields=rank_fields, lazy=lazy, parse=parse_module, own=own)
        except (cst.ParserSyntaxError, LazyMismatch):
            if not lazy or part is not None:
                raise
            blocks = [(start, parse_module(src), members) for start, src, members in pieces]  # as if not lazy
    except (cst.ParserSyntaxError, LazyMismatch):  # (a LazyMismatch gets here only from a part)
        if part is not None:
            from placement_lint.file_parts import failed

            return failed()  # (the whole file is analysed in one piece instead)
        # a split inside a string or bracket, or a file LibCST rejects: parse the real text
        whole = _whole(text, deep)
        if "error" in whole:
            return whole
        blocks, shifts = whole["blocks"], whole["shifts"]
    result = analyze_blocks(blocks, positions=positions, rank_fields=rank_fields)
    if shifts:
        _shift_columns(result, shifts)
    return result


#: selected text from which undecorated top-level defs are parsed lazily (the eager way keeps
#: every function's tree until the end; below this the difference is a few megabytes)
LAZY_FROM = 256 * 1024
_DEF = re.compile(r"(?:async[ \t]+)?def[ \t]+(\w+)")


def undecorated_def(src: str) -> str | None:
    """The name of the function a block defines, when its first line of code is an undecorated
    `def` (blank and comment lines before it); else None."""
    for line in src.split("\n", 50):  # (leading comments are few; a block this far without code is not one)
        code = line.strip()
        if code and not code.startswith("#"):
            found = _DEF.match(line)
            return found.group(1) if found else None
    return None


def _whole(text: str, deep: bool) -> dict[str, Any]:
    """The whole text parsed as one block: {"blocks", "shifts"} or {"error"}."""
    import libcst as cst

    from placement_lint.cst_parse import parse_module

    verdict = depth.check(text)
    if verdict.error:
        return {"error": verdict.error}
    if verdict.deep and not deep:
        raise NeedsDeep
    try:
        return {"blocks": [(1, parse_module(text), None)], "shifts": {}}
    except cst.ParserSyntaxError as exc:
        first = exc
    normal, shifts = normalize(text)
    if normal != text:
        try:
            return {"blocks": [(1, parse_module(normal), None)], "shifts": shifts}
        except cst.ParserSyntaxError:
            pass  # report the original text's error
    return {"error": syntax_error(first, text)}


def normalize(text: str) -> tuple[str, dict[int, int]]:
    """`text` with the two CPython-valid forms LibCST rejects rewritten, and {line: characters
    removed at its start} to put the columns back. A form feed in the indentation goes with the
    whitespace before it (CPython counts the indentation from the last form feed); a backslash
    continuation (CRLF) that ends the file becomes a space (length kept): CPython ends the
    statement there, LibCST wants another line."""
    shifts: dict[int, int] = {}
    if "\f" in text:
        for m in _FORM_FEED_INDENT.finditer(text):
            shifts[text.count("\n", 0, m.start()) + 1] = m.end() - m.start()
        text = _FORM_FEED_INDENT.sub("", text)
    if text.endswith("\\\r\n"):
        text = text[:-3] + " \r\n"
    return text, shifts


def syntax_error(exc: Any, text: str) -> dict[str, Any]:
    """The DTP000 error of a file LibCST rejects: its message and position, and what Python says
    (compiled to an AST only: nothing is run)."""
    message = " ".join(str(getattr(exc, "message", "") or exc).split()) or "syntax error"
    if len(message) > MESSAGE_MAX:
        message = message[: MESSAGE_MAX - 3] + "..."
    try:
        compile(text, "<file>", "exec", 0x400, dont_inherit=True)  # ast.PyCF_ONLY_AST
        python = "Python itself accepts this file; placement-lint's parser (LibCST) does not"
    except SyntaxError as err:
        python = f"Python: {err.msg}" + (f" at line {err.lineno}" if err.lineno else "")
    except (ValueError, RecursionError, MemoryError) as err:
        python = f"Python: {err}" if isinstance(err, ValueError) else f"Python: {type(err).__name__}"
    return {"line": exc.raw_line, "column": exc.raw_column + 1, "message": f"could not parse: {message} ({python})"}


def _shift_columns(result: dict[str, Any], shifts: dict[int, int]) -> None:
    """Columns of positions on lines `normalize` shortened, back to the file's own."""
    for site in result.get("sites", ()):
        pos = site.get("pos")
        if pos:
            pos[1] += shifts.get(pos[0], 0)
            pos[3] += shifts.get(pos[2], 0)
        for at in (site.get("at") or {}).values():
            at[1] += shifts.get(at[0], 0)
