"""Per-file facts: a pure function of a file's source text.

The analyzer parses a file with LibCST and runs a small abstract interpretation over each function
(statements in order, branches joined) that tracks, for every local name, what kind of value it
holds: a DTensor and its placements, a local tensor that left DTensor at some *exit site*, a value
derived from this process's rank, rank-dependent tensor data, integer tensors, Python lists,
placement tuples, `functools.partial` objects, config objects with fields.

It emits *sites* (plain dicts, JSON-serialisable, so they can be cached by content hash and built
in a process pool): every bare `to_local()`/`full_tensor()` with what its result met, every
rank-indexed slice, every ParallelStyle instantiation, every `local_map`; plus class facts for the
project index (which classes are ParallelStyles whose hooks leave DTensor bare). Rules decide.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import libcst as cst

from placement_lint.analysis.calls import CallsMixin
from placement_lint.analysis.expressions import ExpressionsMixin
from placement_lint.analysis.lazy import LazyMixin
from placement_lint.analysis.scopes import ClassInfo, Scope
from placement_lint.analysis.sites import SitesMixin
from placement_lint.analysis.statements import StatementsMixin
from placement_lint.analysis.summaries import SummariesMixin
from placement_lint.analysis.syntax import dotted
from placement_lint.analysis.values import V


# The analyzer is split along its seams: values (the lattice), scopes, statements, expressions,
# calls and sites each live in placement_lint/analysis/; this class holds the state they share,
# name resolution and the order in which a file is walked.
class FileAnalyzer(StatementsMixin, ExpressionsMixin, CallsMixin, SitesMixin, SummariesMixin, LazyMixin):
    def __init__(self, blocks: Sequence[tuple[int, cst.Module | None, list | None]], positions: str = "none",
                 lazy: dict[int, tuple[str, str]] | None = None, parse: Any = None):
        # (1-based start line, module, kept class members or None) per parsed top-level block;
        # module None: a block parsed when its function is analysed (`lazy`: index -> (function
        # name, source); `parse` parses it), and None again once done (see LazyMixin)
        self.blocks = list(blocks)
        self.block_index = 0
        self.module = blocks[0][1] if blocks and blocks[0][1] is not None else cst.Module(body=[])
        self.positions = positions
        self.init_lazy(lazy or {}, parse)
        # the method being analysed, when its own line is known: (node, 0-based line, indent)
        self.unit: tuple[cst.FunctionDef, int, int] | None = None
        self.site_units: list[tuple[cst.FunctionDef, int, int] | None] = []
        self.imports: dict[str, str] = {}  # local name -> dotted qualified name
        self.sites: list[dict[str, Any]] = []
        self.site_nodes: list[cst.CSTNode] = []
        self.site_blocks: list[int] = []
        self.related_nodes: dict[int, list[tuple[str, cst.CSTNode, tuple[int, Any]]]] = {}  # key, node, place
        self.classes: list[ClassInfo] = []
        self.local_classes: dict[str, ClassInfo] = {}
        self.local_functions: set[str] = set()
        self._plan_key: str | None = None
        self._plan_elem: cst.CSTNode | None = None  # the plan dict entry being evaluated
        self.rank_fields: frozenset = frozenset()
        # per-function summaries (analysis/summaries.py): parameter slots and where they went
        self.functions: dict[str, dict[str, Any]] = {}
        self.slots: list[dict[str, Any]] = []
        self.slot_nodes: dict[int, list[tuple[str, cst.CSTNode, tuple[int, Any]]]] = {}
        self.returns_styles: dict[str, set[str]] = {}
        # function bodies to analyse, in order (a deque: a file of 100,000 functions pops them all),
        # each with its key in that order (see `defer`)
        self._deferred: deque[tuple[int, cst.FunctionDef, Scope, str, ClassInfo | None, str, tuple]] = deque()
        # one part of a file split across processes (file_parts.py): the lazy blocks whose bodies
        # this analyzer analyses (None: all), and what the merge needs to put the parts together
        self.own: set[int] | None = None
        self.entry_key: tuple = ()  # the deferred function being analysed; () at module level
        self.module_sites = 0  # sites recorded by module-level code (set once it has run)
        self._children: dict[Any, int] = {}  # deferrals made so far by a block (module level) / entry
        self.shared_writes = 0  # imports and classes recorded: state every later function reads
        self.entries: list[tuple[tuple, int, int, bool]] = []  # (key, first site, end, owned)
        self.fn_entries: list[tuple[str, tuple]] = []  # (function symbol, entry analysing it)
        self.entangled = False  # a lazy function wrote state the others read: not splittable

    # -- name resolution -----------------------------------------------------------------------
    def qualify(self, node: cst.BaseExpression) -> str | None:
        """Dotted name with the first component replaced by what it was imported as."""
        name = dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head in self.imports:
            q = self.imports[head]
            return f"{q}.{rest}" if rest else q
        return name

    def api_key(self, node: cst.BaseExpression) -> str | None:
        """Canonical API key of a callee (`Replicate`, `distribute_tensor`, ...) or None.

        Names imported from torch, and unresolved names (re-exports, star imports), count; names
        imported from a project module or defined in this file do not.
        """
        q = self.qualify(node)
        if q is None:
            return None
        if "." not in q and (q in self.local_classes or q in self.local_functions):
            return None  # defined in this file: a project name that merely shares a torch name
        # torch names, and names re-exported by a project (`from .compat import Replicate`)
        return q.rsplit(".", 1)[-1]

    def run(self) -> None:
        top = Scope("", None, None)
        for i, (_, module, _) in enumerate(self.blocks):
            if i in self.lazy:
                self.local_functions.add(self.lazy[i][0])
            else:
                self.prescan(module.body)
        for i, (_, module, _) in enumerate(self.blocks):
            self.select_block(i)
            if i in self.lazy:
                if self.own is None or i in self.own:
                    self.defer_lazy(i, top)  # what its def statement does at module level
                else:
                    top.env[self.lazy[i][0]] = V(kind="function")  # another part analyses its body
            else:
                self.block(module.body, top)
        self.module_sites = len(self.sites)
        # function bodies see the whole module's globals, so they run after module-level code
        while self._deferred:
            i, fn, parent, symbol, cls, guard, key = self._deferred.popleft()
            self.entry_key, first, writes = key, len(self.sites), self.shared_writes
            if fn is None:
                fn, guard = self.parse_lazy(i)
            self.select_block(i)
            self.function(fn, parent, symbol, cls, guard)
            self.done_deferred(i)
            if self.own is not None:
                owned = key[1][0] in self.lazy
                self.entries.append((key, first, len(self.sites), owned))
                self.entangled |= owned and self.shared_writes != writes

    def defer(self, entry: tuple[int, cst.FunctionDef, Scope, str, ClassInfo | None, str]) -> None:
        """Queue a function body. Its key orders it as the queue does, whatever else is queued:
        (depth, path), the path being (block, n-th deferral of the block's module-level code)
        for a function the module level defines, else its parent's path and its own n."""
        parent = self.entry_key
        counter = entry[0] if not parent else parent
        n = self._children.get(counter, 0)
        self._children[counter] = n + 1
        key = (parent[0] + 1, parent[1] + (n,)) if parent else (1, (entry[0], n))
        self._deferred.append((*entry, key))
        self.count_deferred(entry[0])

    def select_block(self, i: int) -> None:
        self.block_index = i
        self.module = self.blocks[i][1]

    def prescan(self, body: Sequence[cst.CSTNode]) -> None:
        for stmt in body:
            if isinstance(stmt, cst.ClassDef):
                self.local_classes.setdefault(stmt.name.value, None)  # type: ignore[arg-type]
            elif isinstance(stmt, cst.FunctionDef):
                self.local_functions.add(stmt.name.value)
            elif isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, (cst.Import, cst.ImportFrom)):
                        self.import_stmt(small)


def analyze_blocks(blocks: Sequence[tuple[int, cst.Module | None, list | None]], positions: str = "none",
                   rank_fields: frozenset = frozenset(), lazy: dict[int, tuple[str, str]] | None = None,
                   parse: Any = None, own: set[int] | None = None) -> dict[str, Any]:
    """Facts of a file's parsed blocks. `rank_fields`: names the file assigns from a rank API
    (`tp_rank=mesh.get_local_rank()` as a keyword or an assignment; see facts.rank_fields).
    `lazy`, `parse`: blocks parsed only when analysed (LazyMixin). `own`: the lazy blocks whose
    bodies this part of a split file analyses (file_parts.py); the facts then hold "_part"."""
    a = FileAnalyzer(blocks, positions, lazy, parse)
    a.rank_fields = rank_fields
    a.own = own
    a.run()
    result = a.facts(positions)
    if own is not None:
        result["_part"] = {"module": a.module_sites, "entries": a.entries, "functions": a.fn_entries,
                           "entangled": a.entangled}
    return result


def analyze_module(module: cst.Module) -> dict[str, Any]:
    return analyze_blocks([(1, module, None)], positions="all")
