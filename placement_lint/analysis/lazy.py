"""Blocks parsed when their function is analysed, and dropped once it is: a big file's trees are
never all in memory at once.

Function bodies run after all module-level code (they see every global), so every top-level
function's tree used to stay alive from the parse of the file to the end of its analysis: about
60 bytes of LibCST tree per byte of source, all at once (1.2 GB for a 20 MB file of functions).
A top-level `def` without decorators does nothing at module level but bind its name, which its
first line says; its block (given as `lazy`: index -> (name, source)) is parsed when the
function's turn comes, in the same order as before. Once the block's last deferred function
(nested ones included) is analysed, the positions later asked for its nodes are computed from its
table (only if the facts will ask: the same rule as SitesMixin.facts) and the tree is dropped.
The facts are those of the eager analysis (tests/test_hostile_code.py compares them).
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from placement_lint.analysis.positions import has_ranges, table
from placement_lint.analysis.scopes import Scope
from placement_lint.analysis.values import V


class LazyMismatch(Exception):
    """A lazy block is not the one undecorated def its first line announced: analyse eagerly."""


class Placed:
    """What stands for a node of a dropped block in the analyzer's records (site nodes, evidence):
    its range in the block, or None where the facts will not ask. Being no node, it is never
    `is` one: identity tests on nodes keep their meaning."""

    __slots__ = ("range",)

    def __init__(self, where: tuple[int, int, int, int] | None):
        self.range = where


class LazyMixin:
    """Mixin of FileAnalyzer (placement_lint.analyzer)."""

    def init_lazy(self, lazy: dict[int, tuple[str, str]], parse: Any) -> None:
        self.lazy = lazy
        self.parse_block = parse
        self.pending: dict[int, int] = {}  # lazy block -> deferred functions not yet analysed
        self.wanted: dict[int, list[tuple]] = {}  # lazy block -> where its nodes are recorded
        self.needed: set[int] = set()  # lazy blocks whose table the facts will read

    def defer_lazy(self, i: int, top: Scope) -> None:
        """The module-level effect of block i's undecorated def: its name bound, its body deferred."""
        name = self.lazy[i][0]
        top.env[name] = V(kind="function")
        self.defer((i, None, top, name, None, ""))  # type: ignore[arg-type]

    def parse_lazy(self, i: int) -> tuple[cst.FunctionDef, str]:
        start, _, members = self.blocks[i]
        module = self.parse_block(self.lazy[i][1])
        body = module.body
        if len(body) != 1 or not isinstance(body[0], cst.FunctionDef) or body[0].decorators \
                or body[0].name.value != self.lazy[i][0]:
            raise LazyMismatch(i)
        self.blocks[i] = (start, module, members)
        return body[0], self.decorator_guard(body[0])

    def count_deferred(self, i: int) -> None:
        if i in self.lazy:
            self.pending[i] = self.pending.get(i, 0) + 1

    def done_deferred(self, i: int) -> None:
        if i not in self.lazy:
            return
        self.pending[i] -= 1
        if self.pending[i]:
            return  # a nested function of the block is still to come
        start, module, members = self.blocks[i]
        # ("free": only a tree that has them, analysis/fast_parse.py; the facts then say which are missing)
        wanted = i in self.needed and self.positions != "none" and (self.positions != "free" or has_ranges(module))
        ranges = table(module) if wanted else None
        # every record of one of its nodes now holds a Placed: nothing keeps the tree alive
        for where in self.wanted.pop(i, ()):
            if where[0] == "site":
                node = self.site_nodes[where[1]]
                self.site_nodes[where[1]] = Placed(ranges[node] if ranges is not None else None)
            else:
                records = (self.related_nodes if where[0] == "related" else self.slot_nodes)[where[1]]
                key, node, place = records[where[2]]
                records[where[2]] = (key, Placed(ranges[node] if ranges is not None else None), place)
        self.blocks[i] = (start, None, members)

    def want(self, where: tuple, needed: bool) -> None:
        """A record (("site", index), ("related", site, n) or ("slot", slot, n)) of a node of the
        block being analysed; `needed`: the facts will ask its position (a site a rule reads,
        cited evidence, evidence for another block's site)."""
        i = self.block_index
        if i in self.lazy:
            self.wanted.setdefault(i, []).append(where)
            if needed:
                self.needed.add(i)
