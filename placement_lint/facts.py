"""Per-file facts: a pure function of the file's bytes (so: cacheable by content hash, and
computable in a worker process). Holds the analyzer's sites and class facts, the suppression
table, and a parse error if the file could not be analysed."""

from __future__ import annotations

from typing import Any

from placement_lint import prefilter
from placement_lint.suppression import scan

#: bump when the shape or meaning of facts changes: part of every cache key
FACTS_VERSION = 1

EMPTY: dict[str, Any] = {"sites": [], "classes": [], "suppressions": {}, "parsed": False, "reduced": False, "error": None}


def file_facts(data: bytes, *, force: bool = False) -> dict[str, Any]:
    """Facts of one file.

    Normally only the regions that mention a trigger token are parsed (`regions.reduce_source`).
    `force` parses the whole file whatever it mentions: phase two of the engine uses it for files
    that apply a project ParallelStyle by name, which no static token can announce.
    """
    if not force and not prefilter.might_match(data):
        return EMPTY
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {**EMPTY, "error": {"line": 1, "column": 1, "message": f"file is not valid UTF-8: {exc.reason} at byte {exc.start}"}}
    # libcst is imported only for files that passed the prefilter
    import libcst as cst

    from placement_lint.analyzer import analyze_module

    from placement_lint.regions import reduce_source

    reduced = None if force else reduce_source(text)
    if reduced is not None:
        try:
            module = cst.parse_module(reduced)
        except cst.ParserSyntaxError:
            reduced = None  # a region split inside a string or bracket: parse the real text
    try:
        if reduced is None:
            module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        return {**EMPTY, "parsed": True, "error": {"line": exc.raw_line, "column": exc.raw_column + 1, "message": f"could not parse: {first}"}}
    except (RecursionError, MemoryError) as exc:  # pathological nesting: report, don't crash
        return {**EMPTY, "parsed": True, "error": {"line": 1, "column": 1, "message": f"could not parse: {type(exc).__name__}"}}
    result = analyze_module(module)
    result["suppressions"] = scan(text)
    result["parsed"] = True
    result["reduced"] = reduced is not None
    result["error"] = None
    return result
