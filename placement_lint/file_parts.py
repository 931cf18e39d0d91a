"""One big file analysed by several processes at once, and the parts' facts put back together.

A file is one item of the worker pool, and LibCST builds about one node per byte at a few
microseconds each: a 20 MB file took minutes on one core while the others idled. The analyzer
parses a big file's undecorated top-level functions lazily, one at a time (analysis/lazy.py),
and a function's body sees only the module level, which every part analyses in full: so part k
of n analyses the module level, every function the module level itself defines (methods,
decorated functions) and the k-th share of the lazy functions, and binds the others' names only.

The merge puts the sites back in the order of one whole analysis (each function has a key in
the analyzer's queue order, analyzer.FileAnalyzer.defer) and refuses, returning None so that the
caller analyses the file in one piece, whenever the parts could differ from that analysis: a lazy
function that recorded an import or a class (state the functions after it read), a site of the
shared code that differs between parts (a lazy function added evidence to it), a function name
bound twice, a part whose parse failed. tests/test_file_parts.py compares merged and whole facts.
"""

from __future__ import annotations

from typing import Any, Sequence

#: files from this size (bytes) are split across the pool (module attribute: tests lower it)
SPLIT_FROM = 2 * 1024 * 1024
#: the least source a part is given: each part also reads, decodes and selects the whole file
PART_BYTES = 1024 * 1024


def unsplit() -> dict[str, Any]:
    """A part's facts when the file turned out to have no lazily parsed function (part 0 analysed
    it whole), or part 0's facts were in the cache. (A new dict each time: facts get keys added.)"""
    return {"_part": {"unsplit": True}}


def failed() -> dict[str, Any]:
    """A part's facts when its parse failed (the file is then analysed in one piece)."""
    return {"_part": {"failed": True}}


def count(size: int, workers: int) -> int:
    """Parts to analyse a file of `size` bytes in, with `workers` processes (1: not split)."""
    if workers < 2 or size < SPLIT_FROM:
        return 1
    return max(1, min(workers, size // PART_BYTES))


def share(lazy: dict[int, tuple[str, str]], part: tuple[int, int]) -> set[int]:
    """The lazy blocks part (k, n) analyses: the k-th of n runs of consecutive blocks, cut by
    their source's length (every part computes the same cut from the same selection)."""
    k, n = part
    total = sum(len(src) for _, src in lazy.values())
    own, seen = set(), 0
    for i in sorted(lazy):
        if seen * n // max(total, 1) == k:
            own.add(i)
        seen += len(lazy[i][1])
    return own


def _info(facts: dict[str, Any]) -> dict[str, Any] | None:
    return facts.get("_part")


def _stripped(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facts.items() if k != "_part"}


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The facts of the whole file from its parts' (in part order), or None when the parts cannot
    stand for one analysis (the caller then analyses the file in one piece)."""
    crashed = next((p for p in parts if p.get("crashed")), None)
    if crashed is not None:
        return crashed  # (the file's DTP000: its analysis killed a process, or took too long)
    first, rest = parts[0], parts[1:]
    if all((_info(p) or {}).get("unsplit") for p in rest):
        return _stripped(first)  # nothing was lazy: part 0 analysed the whole file
    infos = [_info(p) for p in parts]
    if any(info is None for info in infos):
        # facts made before any analysis (no trigger token, undecodable, too deep): the same text,
        # the same facts in every part
        return _stripped(first) if all(_stripped(p) == _stripped(first) for p in rest) else None
    if any(info.get("failed") or info.get("unsplit") or info.get("entangled") for info in infos):
        return None
    return _merged(parts, infos)


def _shared(facts: dict[str, Any], info: dict[str, Any]) -> tuple[list, list, dict[int, int]]:
    """A part's sites of the code every part analyses (in order), the keys of its functions, and
    its site index -> index among those sites."""
    sites = facts["sites"]
    spans = [(None, 0, info["module"])] + [(key, a, b) for key, a, b, owned in info["entries"] if not owned]
    shared, keys, index = [], [], {}
    for key, a, b in spans:
        keys.append(key)
        for i in range(a, b):
            index[i] = len(shared)
            shared.append(sites[i])
    return shared, keys, index


def _merged(parts: Sequence[dict[str, Any]], infos: list[dict[str, Any]]) -> dict[str, Any] | None:
    first = parts[0]
    shared, keys, index0 = _shared(first, infos[0])
    classes = [dict(c, bare_exits=[index0[i] for i in c["bare_exits"]]) for c in first["classes"]]
    for facts, info in zip(parts[1:], infos[1:]):
        other, other_keys, index = _shared(facts, info)
        if other != shared or other_keys != keys:
            return None  # a lazy function changed what the shared code recorded
        if [dict(c, bare_exits=[index[i] for i in c["bare_exits"]]) for c in facts["classes"]] != classes:
            return None
    # every function body, shared ones from part 0, in the order of one whole analysis
    spans = [(key, 0, a, b) for key, a, b, owned in infos[0]["entries"] if not owned]
    spans += [(key, p, a, b) for p, info in enumerate(infos) for key, a, b, owned in info["entries"] if owned]
    spans.sort(key=lambda span: span[0])
    sites = list(first["sites"][: infos[0]["module"]])
    new_index = {i: i for i in range(len(sites))}  # part 0's module-level sites keep theirs
    for key, p, a, b in spans:
        for i in range(a, b):
            if p == 0:
                new_index[i] = len(sites)
            sites.append(parts[p]["sites"][i])
    # functions: which entry bound each symbol; shared symbols from part 0 (every part has the
    # same shared keys, checked above; () is the module level, whose methods run at once)
    shared_keys = {*keys, ()}
    owner: dict[str, tuple[tuple, int]] = {}
    for p, info in enumerate(infos):
        for symbol, key in info["functions"]:
            if p and key in shared_keys:
                continue  # shared code: compared below, taken from part 0
            if symbol in owner and owner[symbol] != (key, p):
                return None  # a name defined twice: which one wins depends on the order
            owner[symbol] = (key, p)
    shared_functions = {s: first["functions"].get(s) for s, (key, p) in owner.items() if p == 0 and key in shared_keys}
    for facts in parts[1:]:
        if any(facts["functions"].get(s) != info for s, info in shared_functions.items()):
            return None
    functions = {}
    for symbol, (key, p) in sorted(owner.items(), key=lambda item: item[1][0]):
        if symbol in parts[p]["functions"]:
            functions[symbol] = parts[p]["functions"][symbol]
    merged = _stripped(first)
    merged["sites"] = sites
    merged["classes"] = [dict(c, bare_exits=[new_index[i] for i in c["bare_exits"]]) for c in first["classes"]]
    merged["functions"] = functions
    merged["unpositioned"] = any(p.get("unpositioned") for p in parts)
    merged["positioned"] = all(p.get("positioned") for p in parts)
    return merged
