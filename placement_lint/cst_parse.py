"""LibCST parsing of source the analyzer reads, without LibCST's per-node validation.

Every LibCST node validates itself on construction (`CSTNode.__post_init__` calls `_validate`).
For a tree LibCST's own parser builds from source it has just accepted, that work is redundant
(LibCST's comment there says as much) and is about 15 % of parsing, which is most of a cold
run's time. `parse_module` switches validation off for the parse only, and only where
`CSTNode.__post_init__` is still the one-line hook this relies on: a LibCST that changes it is
parsed the ordinary way. Nodes built anywhere else (fixes, tests) are validated as usual; the
analyzer runs one parse at a time per process, so nothing else builds nodes meanwhile.
"""

from __future__ import annotations

import libcst as cst
from libcst._nodes.base import CSTNode

_HOOK = CSTNode.__dict__.get("__post_init__")
#: the hook does nothing but validate: skipping it skips only validation
_SKIPPABLE = _HOOK is not None and getattr(getattr(_HOOK, "__code__", None), "co_names", None) == ("_validate",)


def _no_validation(self: CSTNode) -> None:
    return None


#: build the tree from CPython's parser where it can (analysis/fast_parse.py); tests switch it off
#: to compare the two
FAST = True


def parse_module(source: str) -> cst.Module:
    """The tree of `source`: from CPython's parser when the fast front end reproduces it
    (analysis/fast_parse.py), else `libcst.parse_module(source)`, the nodes unvalidated where
    that is known to be safe."""
    if FAST:
        from placement_lint.analysis.fast_parse import parse

        module = parse(source)
        if module is not None:
            return module
    if not _SKIPPABLE:
        return cst.parse_module(source)
    CSTNode.__post_init__ = _no_validation  # type: ignore[method-assign]
    try:
        return cst.parse_module(source)
    finally:
        CSTNode.__post_init__ = _HOOK  # type: ignore[method-assign]
