"""Helpers on LibCST syntax, and the name heuristics the analyzer may use where the code says
nothing (api.py holds the name tables)."""

from __future__ import annotations

import re
import warnings

import libcst as cst

from placement_lint import api


def dotted(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def string_value(node: cst.BaseExpression) -> str | None:
    """The value of a str literal, or None (not a plain string literal, a bytes literal, or one
    Python rejects: LibCST parses a NUL byte or an unknown `\\N{...}` in a string, and its
    `evaluated_value` then raises from ast.literal_eval)."""
    if not isinstance(node, cst.SimpleString):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an invalid escape warns; -W error would make it raise
            value = node.evaluated_value
    except (SyntaxError, ValueError):
        return None
    return value if isinstance(value, str) else None


def module_ref(node: cst.BaseExpression | None) -> str:
    return dotted(node) or "" if node is not None else ""


def is_self(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value in ("self", "cls")


def is_data_parallel_name(text: str) -> bool:
    words = re.split(r"[^a-z0-9]+", text.lower())
    return any(w in api.DATA_PARALLEL_MARKERS or w.startswith(("dp_", "cp_", "sp_")) for w in words)


def is_int_name(low: str) -> bool:
    """Names that hold integer data in practice: ids, indices, masks, counts, offsets."""
    return low.endswith(api.INT_NAME_SUFFIXES) or any(w in low for w in api.INT_NAME_PARTS)


def kwarg(call: cst.Call, name: str) -> cst.Arg | None:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a
    return None
