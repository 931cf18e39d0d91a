"""LibCST nodes made without their constructors, and the tables from CPython's AST operators to
LibCST's (for analysis/fast_parse.py).

A LibCST node's constructor validates it and makes its default whitespace objects; a tree built
from a text CPython has parsed needs neither. `make(cls, **fields)` allocates the node and sets
every field of the dataclass: the given ones, the others to their defaults (shared: nodes are
immutable, and the analyzer never reads whitespace).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Callable

import libcst as cst


def _maker(cls: type) -> Callable[..., Any]:
    """A function that allocates a `cls` without its constructor (no validation, no default object
    made) and sets every field: the given ones, the others to their defaults (shared: nodes are
    immutable). Generated straight-line code, as `dataclasses` makes `__init__`."""
    params, body, scope = [], [], {"_new": object.__new__, "_set": object.__setattr__, "_cls": cls}
    for i, f in enumerate(dataclasses.fields(cls)):
        if f.default is not dataclasses.MISSING:
            scope[f"_d{i}"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_d{i}"] = f.default_factory()
        else:
            scope[f"_d{i}"] = None  # (the converter always gives these)
        params.append(f"{f.name}=_d{i}")
        body.append(f"    _set(n, {f.name!r}, {f.name})")
    signature = f"*, {', '.join(params)}" if params else ""
    code = f"def make({signature}):\n    n = _new(_cls)\n" + "\n".join(body) + "\n    return n\n"
    exec(compile(code, f"<fast_parse {cls.__name__}>", "exec"), scope)  # our own code: field names only
    return scope["make"]


_MAKERS: dict[type, Callable[..., Any]] = {}


def make(cls: type, **given: Any) -> Any:
    maker = _MAKERS.get(cls)
    if maker is None:
        maker = _MAKERS[cls] = _maker(cls)
    return maker(**given)


BINARY = {
    ast.Add: cst.Add, ast.Sub: cst.Subtract, ast.Mult: cst.Multiply, ast.Div: cst.Divide,
    ast.FloorDiv: cst.FloorDivide, ast.Mod: cst.Modulo, ast.Pow: cst.Power, ast.LShift: cst.LeftShift,
    ast.RShift: cst.RightShift, ast.BitOr: cst.BitOr, ast.BitAnd: cst.BitAnd, ast.BitXor: cst.BitXor,
    ast.MatMult: cst.MatrixMultiply,
}
AUGMENTED = {
    ast.Add: cst.AddAssign, ast.Sub: cst.SubtractAssign, ast.Mult: cst.MultiplyAssign, ast.Div: cst.DivideAssign,
    ast.FloorDiv: cst.FloorDivideAssign, ast.Mod: cst.ModuloAssign, ast.Pow: cst.PowerAssign,
    ast.LShift: cst.LeftShiftAssign, ast.RShift: cst.RightShiftAssign, ast.BitOr: cst.BitOrAssign,
    ast.BitAnd: cst.BitAndAssign, ast.BitXor: cst.BitXorAssign, ast.MatMult: cst.MatrixMultiplyAssign,
}
UNARY = {ast.Not: cst.Not, ast.USub: cst.Minus, ast.UAdd: cst.Plus, ast.Invert: cst.BitInvert}
COMPARE = {
    ast.Eq: cst.Equal, ast.NotEq: cst.NotEqual, ast.Lt: cst.LessThan, ast.LtE: cst.LessThanEqual,
    ast.Gt: cst.GreaterThan, ast.GtE: cst.GreaterThanEqual, ast.Is: cst.Is, ast.IsNot: cst.IsNot,
    ast.In: cst.In, ast.NotIn: cst.NotIn,
}
BOOLEAN = {ast.And: cst.And, ast.Or: cst.Or}
#: operator nodes carry nothing but their kind: one instance each (never asked a position)
_OPERATORS: dict[type, Any] = {}


def operator(table: dict, op: ast.AST) -> Any:
    cls = table[type(op)]
    inst = _OPERATORS.get(cls)
    if inst is None:
        inst = _OPERATORS[cls] = make(cls)
    return inst
