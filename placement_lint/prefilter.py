"""Byte-level prefilter: a file that mentions none of these tokens cannot hold a finding, so it is
never decoded, never parsed, and LibCST is never imported for it (TorchFix's trick)."""

from __future__ import annotations

from typing import Iterable

from placement_lint import api

#: tokens whose presence makes a file a candidate. Every site kind the analyzer emits needs one:
#: exits (to_local/full_tensor), styles (their names, ParallelStyle), local_map, rank APIs.
#: tokens of every site kind but rank slices: exits (to_local/full_tensor), styles (their names,
#: ParallelStyle), local_map
STRONG_TOKENS: tuple[str, ...] = (
    *api.EXIT_METHODS,
    "use_local_output",
    "use_local_input",
    "local_map",
    "LocalMapConfig",
    "ParallelStyle",
    *sorted(api.STYLES),
    *sorted(api.STYLE_ALIASES),
)
#: rank APIs: they matter only where something is also sliced (see regions.py)
RANK_TOKENS: tuple[str, ...] = (
    "get_rank",
    "get_local_rank",
    "get_node_local_rank",
    "get_coordinate",
    "get_group_rank",
    "get_global_rank",
    "rank()",
    "LOCAL_RANK",
    "\"RANK\"",
    "'RANK'",
)
#: a file that mentions none of these is never parsed
TRIGGER_TOKENS: tuple[bytes, ...] = tuple(t.encode() for t in (*STRONG_TOKENS, *RANK_TOKENS))


#: every trigger token contains one of these: a few memmem scans rule out most files before the
#: scans for each token run on the rest
#: (tests/test_prefilter.py checks that every token contains one)
SCREEN: tuple[bytes, ...] = (
    b"_local", b"local_map", b"LocalMap", b"full_tensor", b"Parallel", b"PrepareModule",
    b"PrepareFloat8", b"rank()", b"get_rank", b"RANK", b"get_coordinate",
    b"group_rank", b"global_rank",
)


def might_match(data: bytes, extra: Iterable[bytes] = ()) -> bool:
    """True when `data` mentions a trigger token (or one of `extra`, e.g. project style names)."""
    # memmem scans (C speed, SIMD) throughout: a few screens rule most files out, then one scan per
    # token; an alternation regex over the file cost a third more on torch's tree
    if any(s in data for s in SCREEN) and any(t in data for t in TRIGGER_TOKENS):
        return True
    return any(tok in data for tok in extra)
