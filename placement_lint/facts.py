"""Per-file facts: a pure function of the file's bytes (so: cacheable by content hash, and
computable in a worker process). Holds the analyzer's sites and class facts, the suppression
table, and a parse error if the file could not be analysed."""

from __future__ import annotations

from typing import Any

from placement_lint import api, prefilter, source_text
from placement_lint.suppression import named, scan

#: bump when the shape or meaning of facts changes: part of every cache key
FACTS_VERSION = 4


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def data_parallel_context(text: str) -> bool:
    """Whether the file names a data-parallel wrapper or mesh (api.DATA_PARALLEL_CONTEXT) as a
    whole word. str.find per token (C speed) rather than one regex over the whole file: this
    runs for every file analysed."""
    for token in api.DATA_PARALLEL_CONTEXT:
        i = text.find(token)
        while i != -1:
            end = i + len(token)
            if (i == 0 or not _word_char(text[i - 1])) and (end == len(text) or not _word_char(text[end])):
                return True
            i = text.find(token, end)
    return False


EMPTY: dict[str, Any] = {"sites": [], "classes": [], "suppressions": {}, "parsed": False, "mode": "full", "error": None}


#: suffix of the region modes for a run whose threshold is medium or high: rank-only test
#: functions are not selected (regions.select_blocks(skip_test_rank=True); the rank slices they
#: could hold are low). Part of the mode string, so of the cache key: facts computed with and
#: without it are never served for each other.
SKIP_TEST_RANK = "/skip-test-rank"

#: analysis modes. "" (the first pass): relevant regions only, positioned where the tree comes with
#: its positions (analysis/fast_parse.py; the facts say "positioned" when no position "positions"
#: would give is missing): a block LibCST parsed would cost a code-generating pass, and most files
#: have no finding. "positions": the same, every site a rule reads positioned, for files that have
#: findings and are not "positioned" yet. "full": the whole file,
#: every position, for files that apply a project ParallelStyle by name (no static token can
#: announce those, and the applying code may sit in a region the first pass dropped); it selects
#: no regions, so it has no SKIP_TEST_RANK variant.
#: "whole": the whole file like "full" but without positions, for files a reference led to (a
#: callee, a style reached through re-exports); the engine re-analyses one in "full" only if it
#: holds a finding or evidence a finding cites.
MODES = ("", "positions", "full", "whole", SKIP_TEST_RANK, "positions" + SKIP_TEST_RANK)
#: modes that analyse every line of the file
WHOLE_FILE_MODES = ("full", "whole")


def base_mode(mode: str) -> str:
    """The mode without SKIP_TEST_RANK: "", "positions" or "full"."""
    return mode.removesuffix(SKIP_TEST_RANK)


#: the regions selected for the last part of a split file this process analysed: a big file's
#: positions pass selects the same regions as its first pass (every worker has analysed a part
#: of it), and the selection is seconds on a file big enough to split
_last_part: list = []


def file_facts(data: bytes, mode: str = "", part: tuple[int, int] | None = None) -> dict[str, Any]:
    """Facts of one file in one of `MODES`; with `part` (k, n), of the k-th of n parts of a file
    split across processes (placement_lint/file_parts.py merges them; never cached as such)."""
    if mode not in MODES:
        raise ValueError(f"unknown facts mode {mode!r}")
    skip_test_rank = mode.endswith(SKIP_TEST_RANK)
    mode_base = base_mode(mode)
    force = mode_base in WHOLE_FILE_MODES
    if not force and not prefilter.might_match(data) and source_text.decodable(data):
        return EMPTY  # (an undecodable file is reported, not skipped: a UTF-16 file never matches)
    try:
        text = source_text.decode(data)  # as CPython reads source: coding cookie, BOM
    except source_text.Undecodable as exc:
        return {**EMPTY, "error": exc.error()}
    # libcst is imported only for files that passed the prefilter (analysis.parse imports it)
    from placement_lint.analysis.parse import facts as parsed_facts
    from placement_lint.regions import all_blocks, rank_fields, select_blocks

    keyword_fields, attribute_fields = rank_fields(text)
    memo = (force, skip_test_rank, text)
    if part is not None and _last_part[:1] == [memo]:
        pieces = _last_part[1]  # (the positions pass of a part whose first pass this worker ran)
    else:
        pieces = all_blocks(text) if force else select_blocks(text, skip_test_rank, keyword_fields)
        if part is not None:
            _last_part[:] = [memo, pieces]
    positions = {"full": "all", "positions": "sites", "": "free"}.get(mode_base, "none")
    # guarded (too deep for LibCST: an error), parsed, analysed (on a deeper stack if need be)
    result = parsed_facts(text, pieces, positions, keyword_fields | attribute_fields, part)
    if result.get("error"):
        return {**EMPTY, "parsed": True, "error": result["error"]}
    result["suppressions"] = scan(text)
    result["suppression_names"] = named(text)
    result["dp_context"] = data_parallel_context(text)
    result["parsed"] = True
    result["mode"] = mode
    result["error"] = None
    return result
