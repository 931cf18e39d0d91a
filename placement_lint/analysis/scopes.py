"""Scopes (one per function, class body or module) and what the analyzer knows of a class."""

from __future__ import annotations

import dataclasses

import libcst as cst

from placement_lint.analysis.values import V


class Scope:
    """One function's (or the module's) environment."""

    def __init__(self, symbol: str, parent: "Scope | None", cls: "ClassInfo | None", guard: str = ""):
        self.symbol = symbol
        self.parent = parent
        self.cls = cls
        self.guard = guard  # "" | "no_grad" | "autograd_function"
        self.env: dict[str, V] = {}

    def lookup(self, name: str) -> V | None:
        s: Scope | None = self
        while s is not None:
            if name in s.env:
                return s.env[name]
            s = s.parent
        return None


@dataclasses.dataclass
class ClassInfo:
    name: str
    qualname: str
    bases: list[str]  # import-resolved dotted refs ("." prefix for relative)
    node: cst.ClassDef
    attrs: dict[str, V] = dataclasses.field(default_factory=dict)
    is_torch_style: bool = False
    is_autograd_function: bool = False
    bare_exits: list[int] = dataclasses.field(default_factory=list)  # site indices
