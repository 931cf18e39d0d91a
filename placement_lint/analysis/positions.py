"""Positions of nodes: LibCST's PositionProvider semantics, at a fraction of its cost.

`libcst.MetadataWrapper(module).resolve(PositionProvider)` first walks the whole tree with a
(batched, here empty) visitor, then code-generates it, entering a generator-based context
manager per node, keeping every generated token and a CodeRange of two CodePositions per node.
On a file dense with findings that was four times the cost of parsing it. `table(module)` does
the one code-generating pass only, with a state that keeps the line and column, not the text;
the ranges are plain tuples (start line, start column, end line, end column: 1-based lines,
0-based columns, as LibCST's), syntactic positions overriding whitespace-inclusive ones exactly
as PositionProvidingCodegenState does (tests/test_hostile_code.py compares the two)."""

from __future__ import annotations

import re
from typing import Any

import libcst as cst
from libcst._nodes.internal import CodegenState

_NEWLINE = re.compile(r"\r\n?|\n")


class _State(CodegenState):
    """A CodegenState that tracks where the generated code is instead of keeping it."""

    def __init__(self, module: cst.Module):
        super().__init__(default_indent=module.default_indent, default_newline=module.default_newline)
        self.line = 1
        self.column = 0
        self.starts: list[tuple[int, int]] = []
        self.ranges: dict[cst.CSTNode, tuple[int, int, int, int]] = {}

    def add_indent_tokens(self) -> None:
        for token in self.indent_tokens:
            self.add_token(token)

    def add_token(self, value: str) -> None:
        if not self.tokens:
            self.tokens.append(value)  # (Module's codegen asks whether any token was generated)
        if "\n" in value or "\r" in value:
            segments = _NEWLINE.split(value)
            self.line += len(segments) - 1
            self.column = len(segments[-1])
        else:
            self.column += len(value)

    def pop_trailing_newline(self) -> None:
        pass  # the module's last newline: no node starts after it

    def before_codegen(self, node: cst.CSTNode) -> None:
        self.starts.append((self.line, self.column))

    def after_codegen(self, node: cst.CSTNode) -> None:
        start = self.starts.pop()
        if node not in self.ranges:  # a syntactic position recorded inside stands
            self.ranges[node] = (start[0], start[1], self.line, self.column)

    def record_syntactic_position(self, node: cst.CSTNode, *, start_node: cst.CSTNode | None = None,
                                  end_node: cst.CSTNode | None = None) -> "_Syntactic":
        return _Syntactic(self, node, start_node, end_node)


class _Syntactic:
    """PositionProvidingCodegenState.record_syntactic_position as a plain context manager."""

    __slots__ = ("state", "node", "start_node", "end_node", "start")

    def __init__(self, state: _State, node: cst.CSTNode, start_node: cst.CSTNode | None, end_node: cst.CSTNode | None):
        self.state, self.node, self.start_node, self.end_node = state, node, start_node, end_node

    def __enter__(self) -> None:
        self.start = (self.state.line, self.state.column)

    def __exit__(self, *exc: Any) -> bool:
        state = self.state
        ranges = state.ranges
        start = ranges[self.start_node][:2] if self.start_node is not None else self.start
        end = ranges[self.end_node][2:] if self.end_node is not None else (state.line, state.column)
        ranges[self.node] = (start[0], start[1], end[0], end[1])
        return False


def table(module: cst.Module) -> dict[cst.CSTNode, tuple[int, int, int, int]]:
    """Every node of `module` with its (start line, start column, end line, end column)."""
    if has_ranges(module):
        return module.ranges  # built with the tree (analysis/fast_parse.py)
    state = _State(module)
    module._codegen(state)
    return state.ranges


def has_ranges(module: Any) -> bool:
    """Whether a tree came with every node's range (the fast front end's, analysis/fast_parse.py):
    its positions cost nothing, where LibCST's cost a code-generating pass."""
    return getattr(module, "ranges", None) is not None
