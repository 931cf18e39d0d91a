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

from placement_lint.analysis.positions import table
from placement_lint.analysis.scopes import Scope
from placement_lint.analysis.values import V


class LazyMismatch(Exception):
    """A lazy block is not the one undecorated def its first line announced: analyse eagerly."""


class LazyMixin:
    """Mixin of FileAnalyzer (placement_lint.analyzer)."""

    def init_lazy(self, lazy: dict[int, tuple[str, str]], parse: Any) -> None:
        self.lazy = lazy
        self.parse_block = parse
        self.pending: dict[int, int] = {}  # lazy block -> deferred functions not yet analysed
        self.wanted: dict[int, list[cst.CSTNode]] = {}  # lazy block -> nodes the facts may position
        self.needed: set[int] = set()  # lazy blocks whose table the facts will read
        self.node_pos: dict[int, tuple[int, int, int, int]] = {}  # id(node) -> its range in its block

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
        if i in self.needed and module is not None:
            ranges = table(module)
            for node in self.wanted.get(i, ()):
                self.node_pos[id(node)] = ranges[node]
        self.wanted.pop(i, None)
        self.blocks[i] = (start, None, members)

    def want(self, node: cst.CSTNode, needed: bool) -> None:
        """A node of the block being analysed whose position the facts may ask for; `needed`:
        they will (a site a rule reads, cited evidence, evidence for another block's site)."""
        i = self.block_index
        if i in self.lazy and self.positions != "none":
            self.wanted.setdefault(i, []).append(node)
            if needed:
                self.needed.add(i)
