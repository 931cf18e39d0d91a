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

import dataclasses
import re
from typing import Any, Iterable, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from placement_lint import api

ANY = "?"  # placement letter for "unknown"


def _is_torch_name(q: str) -> bool:
    """torch itself: `torch` or `torch.*` (not torchtitan, torchao, torchvision...)."""
    return q == "torch" or q.startswith("torch.")


# ----------------------------------------------------------------------------------------------
# Abstract values
@dataclasses.dataclass(frozen=True)
class V:
    """Abstract value. Unknown is the default: every field empty."""

    kind: str = "unknown"  # dtensor|tensor|inttensor|list|chunks|placements|placement|partial|obj|int|str|bool|none|meta|dict|unknown
    pl: frozenset = frozenset()  # placement letters for dtensor/placements; empty = unknown
    exits: frozenset = frozenset()  # indices of exit sites this value derives from
    rank: str = ""  # "" | "call" (from a rank API) | "name" (a name that looks like a rank)
    rankdep: str = ""  # why the data differs across ranks ("" = not known to)
    elems: tuple = ()  # for tuple/list literals (unpacking)
    fields: tuple = ()  # ((key, V), ...) for partial/obj
    callee: str = ""  # for partial: canonical callee
    maybe_none: bool = False
    chunk_op: str = ""  # for kind == "chunks": chunk|split|tensor_split
    parent: Any = None  # for chunks: the V that was split
    param: bool = False  # an nn.Parameter / weight (known differentiable leaf)
    nograd: bool = False  # carries no gradient: .grad, .detach(), fresh tensors, state_dict values
    synced: bool = False  # output of a differentiable collective: its backward already reduces
    slices: frozenset = frozenset()  # rank_slice sites this value is the direct result of

    def field(self, name: str) -> "V | None":
        for k, v in self.fields:
            if k == name:
                return v
        return None


UNKNOWN = V()
NONE = V(kind="none", maybe_none=True)


def join(a: V, b: V) -> V:
    """Merge two branches' values for one name."""
    if a is b or a == b:
        return a
    kind = a.kind if a.kind == b.kind else (b.kind if a.kind == "none" else a.kind if b.kind == "none" else "unknown")
    return V(
        kind=kind,
        pl=(a.pl | b.pl) if (a.pl and b.pl) else frozenset(),
        exits=a.exits | b.exits,
        rank=a.rank or b.rank,
        rankdep=a.rankdep or b.rankdep,
        elems=a.elems if a.elems == b.elems else (),
        fields=a.fields or b.fields,
        callee=a.callee or b.callee,
        maybe_none=a.maybe_none or b.maybe_none or a.kind == "none" or b.kind == "none",
        chunk_op=a.chunk_op or b.chunk_op,
        parent=a.parent or b.parent,
        param=a.param and b.param,
        nograd=a.nograd and b.nograd,
        synced=a.synced and b.synced,
    )


def combine(vals: Iterable[V], kind: str = "tensor") -> V:
    """The value of an operation on several operands: taints flow through."""
    exits: frozenset = frozenset()
    rank = rankdep = ""
    tensors = []
    for v in vals:
        exits |= v.exits
        rank = rank or v.rank
        rankdep = rankdep or v.rankdep
        if v.kind in ("tensor", "dtensor", "inttensor") or v.exits:
            tensors.append(v)
    # no gradient comes out only if none goes in; a collective's output stays synced through views
    nograd = bool(tensors) and all(v.nograd for v in tensors)
    synced = bool(tensors) and all(v.synced for v in tensors)
    return V(kind=kind, exits=exits, rank=rank, rankdep=rankdep, nograd=nograd, synced=synced)


def placements_of(v: V | None) -> frozenset:
    if v is None:
        return frozenset()
    if v.kind in ("placements", "placement"):
        return v.pl
    return frozenset()


# ----------------------------------------------------------------------------------------------
# Helpers on syntax
# ----------------------------------------------------------------------------------------------
def dotted(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


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


# ----------------------------------------------------------------------------------------------
# The analyzer
# ----------------------------------------------------------------------------------------------
class FileAnalyzer:
    def __init__(self, blocks: Sequence[tuple[int, cst.Module, list | None]]):
        # (1-based start line, module, kept class members or None) per parsed top-level block
        self.blocks = blocks
        self.block_index = 0
        self.module = blocks[0][1] if blocks else cst.Module(body=[])
        # the method being analysed, when its own line is known: (node, 0-based line, indent)
        self.unit: tuple[cst.FunctionDef, int, int] | None = None
        self.site_units: list[tuple[cst.FunctionDef, int, int] | None] = []
        self.imports: dict[str, str] = {}  # local name -> dotted qualified name
        self.sites: list[dict[str, Any]] = []
        self.site_nodes: list[cst.CSTNode] = []
        self.site_blocks: list[int] = []
        self.related_nodes: dict[int, list[tuple[str, cst.CSTNode]]] = {}
        self.classes: list[ClassInfo] = []
        self.local_classes: dict[str, ClassInfo] = {}
        self.local_functions: set[str] = set()
        self._plan_key: str | None = None
        self._deferred: list[tuple[int, cst.FunctionDef, Scope, str, ClassInfo | None, str]] = []

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

    # -- sites -----------------------------------------------------------------------------------
    def add_site(self, node: cst.CSTNode, scope: Scope, kind: str, **data: Any) -> int:
        site = {"kind": kind, "symbol": scope.symbol, "guard": scope.guard}
        site.update(data)
        self.sites.append(site)
        self.site_nodes.append(node)
        self.site_blocks.append(self.block_index)
        self.site_units.append(self.unit)
        return len(self.sites) - 1

    def note(self, exits: frozenset, key: str, node: cst.CSTNode, why: str) -> None:
        for i in exits:
            site = self.sites[i]
            site["used"] = True
            if key == "use":
                continue
            site.setdefault(key, [])
            if len(site[key]) < 4:
                site[key].append(why)
                self.related_nodes.setdefault(i, []).append((key, node))

    def use(self, v: V) -> None:
        for i in v.exits:
            self.sites[i]["used"] = True

    def meet(self, operands: Sequence[V], node: cst.CSTNode) -> None:
        """Operands combined in one operation: exits meeting rank-dependent data get noted."""
        for v in operands:
            if not v.exits:
                continue
            for other in operands:
                if other is v:
                    continue
                # only rank-dependent *data* makes per-rank gradients differ: adding or comparing
                # a rank-derived integer offset does not
                reason = f"meets {other.rankdep}" if other.rankdep else ""
                if reason and not (other.exits and other.exits <= v.exits and not other.rankdep):
                    self.note(v.exits - other.exits if other.rankdep.startswith("local") else v.exits, "meets", node, reason)
                    break

    # -- entry -----------------------------------------------------------------------------------
    def run(self) -> None:
        top = Scope("", None, None)
        for _, module, _ in self.blocks:
            self.prescan(module.body)
        for i, (_, module, _) in enumerate(self.blocks):
            self.select_block(i)
            self.block(module.body, top)
        # function bodies see the whole module's globals, so they run after module-level code
        while self._deferred:
            i, fn, parent, symbol, cls, guard = self._deferred.pop(0)
            self.select_block(i)
            self.function(fn, parent, symbol, cls, guard)

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

    # -- statements ------------------------------------------------------------------------------
    def block(self, body: Sequence[cst.CSTNode], scope: Scope) -> None:
        for stmt in body:
            self.stmt(stmt, scope)

    def stmt(self, stmt: cst.CSTNode, scope: Scope) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self.small(small, scope)
        elif isinstance(stmt, cst.FunctionDef):
            guard = scope.guard or self.decorator_guard(stmt)
            symbol = f"{scope.symbol}.{stmt.name.value}" if scope.symbol else stmt.name.value
            for dec in stmt.decorators:
                self.expr(dec.decorator, scope)
            scope.env[stmt.name.value] = V(kind="function")
            self._deferred.append((self.block_index, stmt, scope, symbol, None, guard))
        elif isinstance(stmt, cst.ClassDef):
            self.class_def(stmt, scope)
        elif isinstance(stmt, cst.If):
            self.expr(stmt.test, scope)
            grad = self.grad_predicate(stmt.test)
            # `if not torch.is_grad_enabled(): ...` runs without autograd (and the else of the positive test)
            guards = ("no_grad" if grad is False else "", "no_grad" if grad is True else "")
            self.branches([stmt.body.body, self.orelse(stmt.orelse)], scope, guards)
        elif isinstance(stmt, (cst.For,)):
            it = self.expr(stmt.iter, scope)
            self.bind(stmt.target, self.iter_element(stmt.iter, it), scope)
            self.branches([stmt.body.body, self.orelse(stmt.orelse)], scope)
        elif isinstance(stmt, cst.While):
            self.expr(stmt.test, scope)
            self.branches([stmt.body.body, self.orelse(stmt.orelse)], scope)
        elif isinstance(stmt, cst.With):
            guard = ""
            for item in stmt.items:
                v = self.expr(item.item, scope)
                if self.is_no_grad(item.item):
                    guard = "no_grad"
                if item.asname is not None:
                    self.bind(item.asname.name, v, scope)
            if guard and not scope.guard:
                old = scope.guard
                scope.guard = guard
                self.block(stmt.body.body, scope)
                scope.guard = old
            else:
                self.block(stmt.body.body, scope)
        elif isinstance(stmt, cst.Try):
            self.block(stmt.body.body, scope)
            for h in stmt.handlers:
                self.block(h.body.body, scope)
            if stmt.orelse is not None:
                self.block(stmt.orelse.body.body, scope)
            if stmt.finalbody is not None:
                self.block(stmt.finalbody.body.body, scope)
        elif isinstance(stmt, cst.Match):
            self.expr(stmt.subject, scope)
            self.branches([c.body.body for c in stmt.cases], scope)
        elif hasattr(stmt, "body") and isinstance(getattr(stmt, "body"), cst.BaseSuite):
            self.block(stmt.body.body, scope)  # type: ignore[attr-defined]

    def orelse(self, node: cst.CSTNode | None) -> Sequence[cst.CSTNode]:
        if node is None:
            return ()
        if isinstance(node, cst.If):
            return (node,)
        return node.body.body  # type: ignore[attr-defined]

    def branches(self, bodies: Sequence[Sequence[cst.CSTNode]], scope: Scope, guards: Sequence[str] = ()) -> None:
        """Run each branch on a copy of the environment and join the results."""
        before = dict(scope.env)
        results = []
        outer_guard = scope.guard
        for i, body in enumerate(bodies):
            scope.env = dict(before)
            scope.guard = outer_guard or (guards[i] if i < len(guards) else "")
            self.block(body, scope)
            results.append(scope.env)
        scope.guard = outer_guard
        merged = dict(before)
        for env in results:
            for k, v in env.items():
                merged[k] = join(merged[k], v) if k in merged and merged[k] is not v else v
        scope.env = merged

    def small(self, node: cst.CSTNode, scope: Scope) -> None:
        if isinstance(node, cst.Assign):
            v = self.expr(node.value, scope)
            for t in node.targets:
                self.bind(t.target, v, scope)
        elif isinstance(node, cst.AnnAssign):
            if node.value is not None:
                self.bind(node.target, self.expr(node.value, scope), scope)
        elif isinstance(node, cst.AugAssign):
            cur = self.expr(node.target, scope)
            v = self.expr(node.value, scope)
            self.meet([cur, v], node)
            res = combine([cur, v], cur.kind if cur.kind in ("tensor", "int", "inttensor") else "tensor")
            self.bind(node.target, res, scope)
        elif isinstance(node, cst.Expr):
            self.expr(node.value, scope)
        elif isinstance(node, cst.Return):
            if node.value is not None:
                v = self.expr(node.value, scope)
                self.escape(v, node, "returned")
        elif isinstance(node, (cst.Import, cst.ImportFrom)):
            self.import_stmt(node)
        elif isinstance(node, cst.Raise):
            if node.exc is not None:
                self.expr(node.exc, scope)
        elif isinstance(node, cst.Assert):
            self.expr(node.test, scope)
        elif isinstance(node, cst.Del):
            pass

    def import_stmt(self, node: cst.Import | cst.ImportFrom) -> None:
        if isinstance(node, cst.Import):
            for alias in node.names:
                full = module_ref(alias.name)
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    self.imports[alias.asname.name.value] = full
                else:
                    head = full.split(".", 1)[0]
                    self.imports.setdefault(head, head)
        else:
            mod = "." * len(node.relative) + module_ref(node.module)
            if isinstance(node.names, cst.ImportStar):
                return
            for alias in node.names:
                name = module_ref(alias.name)
                local = alias.asname.name.value if alias.asname is not None and isinstance(alias.asname.name, cst.Name) else name
                sep = "" if mod.endswith(".") else "."
                self.imports[local] = f"{mod}{sep}{name}" if mod else name

    # -- classes and functions ---------------------------------------------------------------------
    def class_def(self, node: cst.ClassDef, scope: Scope) -> None:
        qual = f"{scope.symbol}.{node.name.value}" if scope.symbol else node.name.value
        bases = []
        torch_style = autograd_fn = False
        for b in node.bases:
            q = self.qualify(b.value) or ""
            bases.append(q)
            key = self.api_key(b.value)
            if key in api.STYLE_BASES and (_is_torch_name(q) or q == key or "." in q):
                torch_style = True
            if key in api.AUTOGRAD_FUNCTION_BASES and ("autograd" in q or q == key):
                autograd_fn = True
        info = ClassInfo(node.name.value, qual, bases, node, is_torch_style=torch_style, is_autograd_function=autograd_fn)
        self.classes.append(info)
        self.local_classes[node.name.value] = info
        scope.env[node.name.value] = V(kind="class")
        methods = [s for s in node.body.body if isinstance(s, cst.FunctionDef)]
        # __init__ first: it defines the attributes (placements of self.w, ranks) other methods read
        methods.sort(key=lambda f: f.name.value != "__init__")
        cls_scope = Scope(qual, scope, info)
        for s in node.body.body:
            if not isinstance(s, cst.FunctionDef):
                self.stmt(s, cls_scope)
        # a top-level class split into members by regions: each method's own line is known
        members = self.blocks[self.block_index][2] if not scope.symbol else None
        lines = {}
        if members is not None and len(members) == len(node.body.body):
            lines = {id(stmt): m for stmt, m in zip(node.body.body, members)}
        for fn in methods:
            guard = scope.guard or self.decorator_guard(fn, info)
            if autograd_fn and fn.name.value in ("forward", "backward", "setup_context", "jvp", "vjp"):
                guard = guard or "autograd_function"
            # methods run now (not deferred) so __init__'s attributes are known to the rest
            outer = self.unit
            if id(fn) in lines:
                self.unit = (fn, *lines[id(fn)])
            self.function(fn, scope, f"{qual}.{fn.name.value}", info, guard)
            self.unit = outer

    def function(self, fn: cst.FunctionDef, parent: Scope, symbol: str, cls: ClassInfo | None, guard: str) -> None:
        params = fn.params
        if not guard and any(p.name.value == "bucket" for p in params.params):
            guard = "below_autograd"  # a DDP communication hook: runs on gradients, in backward
        scope = Scope(symbol, parent, cls, guard)
        for p in (*params.posonly_params, *params.params, *params.kwonly_params):
            name = p.name.value
            v = UNKNOWN
            if p.default is not None:
                v = self.expr(p.default, scope)
            low = name.lower()
            if low.endswith(api.RANK_NAME_SUFFIXES) and v.kind in ("unknown", "int", "none"):
                v = V(kind="int", rank="name")
            elif is_int_name(low):
                v = V(kind="inttensor")
            elif low.endswith(api.LIST_NAME_SUFFIXES):
                v = V(kind="list")
            scope.env[name] = v
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                scope.env[star.name.value] = UNKNOWN
        self.block(fn.body.body, scope)

    def decorator_guard(self, fn: cst.FunctionDef, cls: "ClassInfo | None" = None) -> str:
        for dec in fn.decorators:
            d = dec.decorator
            target = d.func if isinstance(d, cst.Call) else d
            key = self.api_key(target)
            if key in api.NO_GRAD_CONTEXTS:
                return "no_grad"
            if key in api.BELOW_AUTOGRAD_DECORATORS and "library" in (self.qualify(target) or ""):
                return "below_autograd"  # a custom op's kernel: autograd never records inside it
        name = fn.name.value.lower()
        if any(s in name for s in api.NO_GRAD_FUNCTION_SUBSTRINGS):
            return "no_grad"  # checkpoint conversion, grad-norm, saved-tensor hooks
        if cls is not None and (
            any(s in cls.name for s in api.NO_GRAD_CLASS_SUBSTRINGS)
            or any(b.rsplit(".", 1)[-1] == "Optimizer" for b in cls.bases)
        ):
            return "no_grad"  # optimizers and checkpoint adapters handle values, not graphs
        return ""

    def grad_predicate(self, test: cst.BaseExpression) -> bool | None:
        """True for `torch.is_grad_enabled()` / `x.requires_grad`, False for their negation
        (also inside an `or` chain, where the negation alone decides the body), None otherwise."""
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            inner = self.grad_predicate(test.expression)
            return None if inner is None else not inner
        if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.Or):
            left, right = self.grad_predicate(test.left), self.grad_predicate(test.right)
            return False if False in (left, right) else None
        target = test.func if isinstance(test, cst.Call) else test
        name = (dotted(target) or "").rsplit(".", 1)[-1]
        return True if name in api.GRAD_PREDICATES else None

    def is_no_grad(self, node: cst.BaseExpression) -> bool:
        if isinstance(node, cst.Call):
            key = self.api_key(node.func)
            if key in api.NO_GRAD_CONTEXTS:
                return True
            if key == "set_grad_enabled" and node.args:
                val = node.args[0].value
                return isinstance(val, cst.Name) and val.value == "False"
        return False

    # -- binding ---------------------------------------------------------------------------------
    def bind(self, target: cst.BaseExpression, v: V, scope: Scope) -> None:
        if isinstance(target, cst.Name):
            name = target.value
            if v.rank == "call" and is_data_parallel_name(name):
                v = dataclasses.replace(v, rank="data")  # cp_rank = mesh.get_local_rank(...)
            if v.kind in ("unknown", "tensor") and not v.exits and is_int_name(name.lower()) and not v.rankdep:
                v = dataclasses.replace(v, kind="inttensor")
            elif v.kind == "unknown" and not v.exits and name.lower().endswith(api.LIST_NAME_SUFFIXES):
                v = dataclasses.replace(v, kind="list")
            scope.env[name] = v
        elif isinstance(target, (cst.Tuple, cst.List)):
            elems = [e.value for e in target.elements]
            for i, e in enumerate(elems):
                if v.elems and i < len(v.elems) and not isinstance(target.elements[i], cst.StarredElement):
                    ev = v.elems[i]
                elif v.kind == "chunks":
                    ev = V(kind="tensor", exits=v.exits, rank=v.rank, rankdep=v.rankdep)
                elif v.kind in ("inttensor", "tensor", "dtensor"):
                    ev = V(kind=v.kind, exits=v.exits, rank=v.rank, rankdep=v.rankdep)
                else:
                    ev = V(kind="int" if v.rank and not v.exits else "unknown", exits=v.exits, rank=v.rank, rankdep=v.rankdep)
                self.bind(e, ev, scope)
        elif isinstance(target, cst.Attribute):
            if is_self(target.value) and scope.cls is not None:
                scope.cls.attrs[target.attr.value] = v
                if v.exits:
                    self.escape(v, target, f"stored in self.{target.attr.value}")
            else:
                self.expr(target.value, scope)
                if v.exits:
                    self.escape(v, target, f"stored in {dotted(target) or 'an attribute'}")
        elif isinstance(target, cst.Subscript):
            base = self.expr(target.value, scope)
            idx = self.subscript_index(target, scope)
            if idx.rank and base.kind not in ("list", "dict", "inttensor"):
                self.rank_slice(target, scope, "slice_assign" if self.has_slice(target) else "index_assign", base, idx, value=v)
            self.use(v)
            if v.exits:
                name = target.value
                if isinstance(name, cst.Name):
                    old = scope.lookup(name.value) or UNKNOWN
                    scope.env[name.value] = dataclasses.replace(old, exits=old.exits | v.exits, rankdep=old.rankdep or v.rankdep)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, UNKNOWN, scope)

    def escape(self, v: V, node: cst.CSTNode, how: str) -> None:
        if v.exits:
            self.note(v.exits, "escapes", node, how)
        for e in v.elems:
            self.escape(e, node, how)

    # -- expressions -------------------------------------------------------------------------------
    def expr(self, node: cst.BaseExpression, scope: Scope) -> V:
        if isinstance(node, cst.Name):
            if node.value == "None":
                return NONE
            if node.value in ("True", "False"):
                return V(kind="bool")
            v = scope.lookup(node.value)
            if v is None:
                return UNKNOWN
            return v
        if isinstance(node, cst.Attribute):
            return self.attribute(node, scope)
        if isinstance(node, cst.Call):
            return self.call(node, scope)
        if isinstance(node, cst.Subscript):
            return self.subscript(node, scope)
        if isinstance(node, cst.BinaryOperation):
            left = self.expr(node.left, scope)
            right = self.expr(node.right, scope)
            self.meet([left, right], node)
            kinds = {left.kind, right.kind}
            if kinds <= {"int", "unknown", "bool"} and (left.rank or right.rank) and not (left.exits or right.exits):
                return combine([left, right], kind="int")
            if "list" in kinds and isinstance(node.operator, (cst.Add, cst.Multiply)) and kinds <= {"list", "int", "unknown"}:
                return V(kind="list", rank=left.rank or right.rank)
            if kinds <= {"int", "bool", "str"}:
                return combine([left, right], kind="int")
            if "inttensor" in kinds and kinds <= {"inttensor", "int", "unknown"}:
                return combine([left, right], kind="inttensor")
            return combine([left, right])
        if isinstance(node, cst.UnaryOperation):
            return self.expr(node.expression, scope)
        if isinstance(node, cst.BooleanOperation):
            return join(self.expr(node.left, scope), self.expr(node.right, scope))
        if isinstance(node, cst.Comparison):
            vals = [self.expr(node.left, scope)] + [self.expr(c.comparator, scope) for c in node.comparisons]
            is_tensor = any(v.kind in ("tensor", "dtensor", "inttensor") or v.exits for v in vals)
            return V(kind="inttensor" if is_tensor else "bool", rank=next((v.rank for v in vals if v.rank), ""))
        if isinstance(node, cst.IfExp):
            self.expr(node.test, scope)
            return join(self.expr(node.body, scope), self.expr(node.orelse, scope))
        if isinstance(node, (cst.Tuple, cst.List)):
            elems = tuple(self.expr(e.value, scope) for e in node.elements)
            if elems and all(e.kind in ("placement", "placements") for e in elems):
                return V(kind="placements", pl=frozenset().union(*(e.pl for e in elems)), elems=elems)
            if elems and any(e.kind in ("placement", "placements") for e in elems):
                pl = frozenset().union(*(e.pl for e in elems)) | ({ANY} if any(e.kind not in ("placement", "placements", "none") for e in elems) else set())
                return V(kind="placements", pl=frozenset(pl), elems=elems,
                         maybe_none=any(e.maybe_none for e in elems))
            kind = "list" if isinstance(node, cst.List) else "tuple"
            return V(kind=kind, elems=elems, exits=frozenset().union(*(e.exits for e in elems)) if elems else frozenset(),
                     rank="", rankdep="")
        if isinstance(node, cst.Dict):
            for el in node.elements:
                if isinstance(el, cst.DictElement):
                    key = el.key
                    prev = self._plan_key
                    if isinstance(key, cst.SimpleString):
                        self._plan_key = key.evaluated_value if isinstance(key.evaluated_value, str) else None
                    self.expr(key, scope)
                    self.expr(el.value, scope)
                    self._plan_key = prev
                else:
                    self.expr(el.value, scope)
            return V(kind="dict")
        if isinstance(node, (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)):
            inner = Scope(scope.symbol, scope, scope.cls, scope.guard)
            comp = node.for_in
            while comp is not None:
                it = self.expr(comp.iter, inner)
                self.bind(comp.target, self.iter_element(comp.iter, it), inner)
                for cond in comp.ifs:
                    self.expr(cond.test, inner)
                comp = comp.inner_for_in
            if isinstance(node, cst.DictComp):
                self.expr(node.key, inner)
                val = self.expr(node.value, inner)
                return V(kind="dict", exits=val.exits)
            val = self.expr(node.elt, inner)
            return V(kind="list", exits=val.exits, rank=val.rank, rankdep=val.rankdep)
        if isinstance(node, (cst.Integer, cst.Float, cst.Imaginary)):
            return V(kind="int")
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)):
            if isinstance(node, cst.FormattedString):
                for part in node.parts:
                    if isinstance(part, cst.FormattedStringExpression):
                        self.expr(part.expression, scope)
            return V(kind="str")
        if isinstance(node, cst.NamedExpr):
            v = self.expr(node.value, scope)
            self.bind(node.target, v, scope)
            return v
        if isinstance(node, cst.Await):
            return self.expr(node.expression, scope)
        if isinstance(node, cst.Yield):
            if isinstance(node.value, cst.BaseExpression):
                self.escape(self.expr(node.value, scope), node, "yielded")
            return UNKNOWN
        if isinstance(node, cst.Lambda):
            return V(kind="function")
        if isinstance(node, cst.StarredElement):
            return self.expr(node.value, scope)
        return UNKNOWN

    def attribute(self, node: cst.Attribute, scope: Scope) -> V:
        attr = node.attr.value
        if is_self(node.value) and scope.cls is not None:
            v = scope.cls.attrs.get(attr)
            if v is not None:
                return v
            low = attr.lower()
            if low.endswith(api.RANK_NAME_SUFFIXES):
                return V(kind="int", rank="name")
            if any(s in low for s in api.PER_RANK_ITERABLE_SUBSTRINGS) and "num" not in low:
                return V(kind="modules", rankdep="")
            return UNKNOWN
        base = self.expr(node.value, scope)
        if attr in api.METADATA_ATTRS:
            return V(kind="meta")
        if attr in ("data", "grad"):
            return V(kind="tensor", nograd=True, rankdep=base.rankdep if attr == "data" else "")
        if base.kind == "obj" or base.kind == "partial":
            f = base.field(attr)
            if f is not None:
                return f
        if base.exits or base.kind in ("tensor", "dtensor", "inttensor"):
            return dataclasses.replace(base, elems=(), fields=())
        if base.rank and base.kind == "int":
            return base
        low = attr.lower()
        if low.endswith(api.RANK_NAME_SUFFIXES) and base.kind in ("unknown", "obj"):
            return V(kind="int", rank="name")
        if is_int_name(low) and not base.exits:
            return V(kind="inttensor")
        return UNKNOWN

    def iter_element(self, iter_node: cst.BaseExpression, it: V) -> V:
        text = (dotted(iter_node) or "").lower()
        if isinstance(iter_node, cst.Call):
            fn = dotted(iter_node.func) or ""
            if fn in ("enumerate", "zip") and iter_node.args:
                first = iter_node.args[0].value
                inner = self.iter_element(first, UNKNOWN)
                if fn == "enumerate":
                    return V(kind="tuple", elems=(V(kind="int"), inner))
                return UNKNOWN
            if fn == "range":
                return V(kind="int", rank=it.rank)
        if it.kind == "modules" or any(s in text for s in api.PER_RANK_ITERABLE_SUBSTRINGS):
            return V(kind="module", rankdep="a per-rank expert (expert parallelism)")
        if it.kind == "chunks":
            return V(kind="tensor", exits=it.exits, rankdep=it.rankdep)
        if it.kind == "placements":
            return V(kind="placement", pl=it.pl)
        return V(kind="unknown", exits=it.exits, rank=it.rank, rankdep=it.rankdep)

    def subscript_index(self, node: cst.Subscript, scope: Scope) -> V:
        vals = []
        for el in node.slice:
            s = el.slice
            if isinstance(s, cst.Index):
                vals.append(self.expr(s.value, scope))
            elif isinstance(s, cst.Slice):
                trim = s.step is None and (s.lower is None or (isinstance(s.lower, cst.Integer) and s.lower.value == "0"))
                for part in (s.lower, s.upper, s.step):
                    if part is not None:
                        v = self.expr(part, scope)
                        # `x[:n]` with a rank-derived n trims padding or sums my predecessors'
                        # sizes: it starts at 0 on every rank, so it is not this rank's slice
                        vals.append(dataclasses.replace(v, rank="") if trim and part is s.upper else v)
        # only a scalar position (a Python int from the rank) makes a manual slice; a tensor of
        # rank-derived indices is token routing: rank-dependent data, not a redistribute stand-in
        scalar = [v for v in vals if v.rank and v.kind not in ("inttensor", "tensor", "dtensor") and not v.exits]
        rank = scalar[0].rank if scalar else ""
        tensor_rank = next((v for v in vals if v.rank and v not in scalar), None)
        rankdep = next((v.rankdep for v in vals if v.rankdep), "")
        if not rankdep and tensor_rank is not None:
            rankdep = "indices derived from the rank"
        return V(kind="index", rank=rank, exits=frozenset().union(*(v.exits for v in vals)) if vals else frozenset(),
                 rankdep=rankdep)

    def subscript(self, node: cst.Subscript, scope: Scope) -> V:
        base = self.expr(node.value, scope)
        idx = self.subscript_index(node, scope)
        if base.kind in ("placements",):
            return V(kind="placement", pl=base.pl)
        if base.kind in ("meta", "str", "dict"):
            if base.kind == "meta":
                return V(kind="int", rank=idx.rank)
            return V(nograd=base.nograd)
        if base.kind == "list" or base.kind == "tuple":
            if base.elems and isinstance(node.slice[0].slice, cst.Index):
                s = node.slice[0].slice.value
                if isinstance(s, cst.Integer) and len(node.slice) == 1:
                    try:
                        return base.elems[int(s.value)]
                    except (IndexError, ValueError):
                        pass
            return V(kind="int" if idx.rank else "unknown", rank=idx.rank or base.rank, exits=base.exits)
        if base.kind == "modules" or base.kind == "module":
            return V(kind="module", rankdep="a per-rank expert (expert parallelism)")
        if idx.rank:
            if base.kind == "inttensor":
                return dataclasses.replace(base, rank=idx.rank)
            if base.kind == "int":
                return V(kind="int", rank=idx.rank)
            if base.kind == "chunks":
                parent = base.parent or UNKNOWN
                site = self.rank_slice(node, scope, base.chunk_op, parent, idx)
                return V(kind="tensor", exits=parent.exits, rankdep="a rank-indexed slice", slices=site)
            site = self.rank_slice(node, scope, "slice" if self.has_slice(node) else "index", base, idx)
            return V(kind="tensor", exits=base.exits, rankdep="a rank-indexed slice", param=False, slices=site)
        if idx.rankdep and base.exits:
            self.note(base.exits, "meets", node, f"is indexed by {idx.rankdep}")
        if base.kind == "chunks":
            parent = base.parent or UNKNOWN
            return V(kind="tensor", exits=parent.exits, rankdep=parent.rankdep, rank=parent.rank)
        kind = base.kind if base.kind in ("tensor", "inttensor", "dtensor") else ("tensor" if base.exits else "unknown")
        return V(kind=kind, exits=base.exits | idx.exits, rank=base.rank, rankdep=base.rankdep or idx.rankdep)

    @staticmethod
    def has_slice(node: cst.Subscript) -> bool:
        return any(isinstance(el.slice, cst.Slice) for el in node.slice)

    def rank_slice(self, node: cst.CSTNode, scope: Scope, op: str, receiver: V, idx: V, value: V | None = None) -> frozenset:
        """A rank-indexed slice. On a local tensor that left DTensor it is evidence for that exit
        (the DTP101 finding covers it, one root cause one finding); otherwise it is a site."""
        if receiver.exits:
            self.note(receiver.exits, "meets", node, "is sliced at a rank-derived position")
            return frozenset()
        if receiver.kind in ("list", "tuple", "dict", "str", "meta", "int", "inttensor", "module", "modules"):
            return frozenset()
        if receiver.nograd or receiver.synced:
            return frozenset()  # no gradient to lose, or a collective's backward already gathers/reduces
        name = (dotted(node.value) if isinstance(node, cst.Subscript) else dotted(node.func.value) if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) else "") or ""
        return frozenset([self.add_site(
            node, scope, "rank_slice", op=op, rank_source=idx.rank,
            receiver_name=name.rsplit(".", 1)[-1],
            receiver=("param" if receiver.param else receiver.kind if receiver.kind in ("dtensor", "tensor") else "unknown"),
            receiver_rankdep=bool(receiver.rankdep),
            value_exits=bool(value is not None and value.exits),
        )])

    # -- calls -------------------------------------------------------------------------------------
    def call(self, node: cst.Call, scope: Scope) -> V:
        func = node.func
        method = func.attr.value if isinstance(func, cst.Attribute) else None
        recv: V | None = None
        if isinstance(func, cst.Attribute):
            # evaluate the receiver only when it is an expression, not a module path like torch.nn
            q = self.qualify(func.value)
            if q is None or not (q.split(".")[0] in self.imports.values() or _is_torch_name(q) or q.split(".")[0] in ("F", "nn", "dist", "os")):
                recv = self.expr(func.value, scope)
        elif not isinstance(func, cst.Name):
            self.expr(func, scope)
        args = [self.expr(a.value, scope) for a in node.args if a.keyword is None]
        kwargs = {a.keyword.value: self.expr(a.value, scope) for a in node.args if a.keyword is not None}
        key = self.api_key(func)
        callee_v = scope.lookup(func.value) if isinstance(func, cst.Name) else None
        if callee_v is not None and callee_v.kind == "partial":
            merged = dict(callee_v.fields)
            merged.update(kwargs)
            return self.api_call(callee_v.callee, None, None, list(callee_v.elems) + args, merged, node, scope, partial_of=True)
        if callee_v is not None and callee_v.kind == "module":
            operands = [callee_v, *args]
            self.meet(operands, node)
            return combine(operands)
        return self.api_call(key, method, recv, args, kwargs, node, scope)

    def api_call(self, key: str | None, method: str | None, recv: V | None, args: list[V], kwargs: dict[str, V],
                 node: cst.Call, scope: Scope, partial_of: bool = False) -> V:
        def arg(i: int, kw: str) -> V | None:
            if kw in kwargs:
                return kwargs[kw]
            return args[i] if i < len(args) else None

        on_value = recv is not None and method is not None  # a method call on a computed value
        if not on_value and key is not None:
            if key in api.PLACEMENT_CONSTRUCTORS:
                return V(kind="placement", pl=frozenset(api.PLACEMENT_CONSTRUCTORS[key]))
            if key in api.DTENSOR_CONSTRUCTORS:
                t = arg(0, "local_tensor" if key == "from_local" else "tensor") or UNKNOWN
                index, keyword = api.DTENSOR_CONSTRUCTORS[key]
                given = arg(index, keyword)
                pl = placements_of(given)
                if given is None:
                    pl = frozenset("R")  # both default to Replicate on every mesh dim
                if key == "from_local":
                    self.use(t)  # re-entering DTensor: from_local's backward will reduce as declared
                    if pl == frozenset("S"):
                        for i in t.slices:  # a rank slice wrapped as this rank's shard: a manual distribute
                            self.sites[i]["rewrapped_as_shard"] = True
                return V(kind="dtensor", pl=pl or frozenset(ANY), param=t.param)
            if key == "Parameter":
                t = arg(0, "data") or UNKNOWN
                # a Parameter requires grad by default, however fresh its data
                return dataclasses.replace(t, param=True, nograd=False, kind=t.kind if t.kind != "unknown" else "tensor")
            if key == "partial" and args:
                target = node.args[0].value if not partial_of else None
                callee = self.api_key(target) if target is not None else None
                inner = scope.lookup(target.value) if isinstance(target, cst.Name) else None
                if inner is not None and inner.kind == "partial":
                    fields = dict(inner.fields)
                    fields.update(kwargs)
                    return V(kind="partial", callee=inner.callee, fields=tuple(fields.items()), elems=inner.elems + tuple(args[1:]))
                if callee in api.LOCAL_MAP_NAMES:
                    self.local_map_site(node, scope, args[1:], kwargs, partial=True)
                return V(kind="partial", callee=callee or "", fields=tuple(kwargs.items()), elems=tuple(args[1:]))
            if key in api.LOCAL_MAP_NAMES and self.torch_or_unresolved(node.func) and "in_types" not in kwargs:
                self.local_map_site(node, scope, args, kwargs)
                return V(kind="function")
            if key in api.RANK_FUNCTIONS:
                return V(kind="int", rank=self.rank_kind(*(a.value for a in node.args)))
            if key in api.STYLES or key in api.STYLE_ALIASES:
                self.style_site(node, scope, api.STYLE_ALIASES.get(key, key), args, kwargs)
                return V(kind="style")
            if key in ("int",) and args:
                return V(kind="int", rank=args[0].rank)
            if key in api.INT_TENSOR_FUNCTIONS:
                if key == "arange" and "dtype" not in kwargs:
                    return combine(args, kind="inttensor")
                return combine([*args, *kwargs.values()], kind="inttensor")
            if key in api.SPLIT_FUNCTIONS and args and self.is_torch(node.func):
                return V(kind="chunks", chunk_op=key, parent=args[0], exits=args[0].exits, rankdep=args[0].rankdep)
            if key in api.LIST_FUNCTIONS and isinstance(node.func, cst.Name):
                return V(kind="list", rank=next((a.rank for a in args if a.rank), ""))
            if self.is_torch(node.func):
                return self.torch_op(key, args, kwargs, node)
            if key in api.OBSERVER_CALLS and isinstance(node.func, cst.Name):
                return V(kind="int", rank=next((a.rank for a in args if a.rank), "")) if key == "int" else UNKNOWN
        if method is not None:
            return self.method_call(method, recv if recv is not None else UNKNOWN, args, kwargs, node, scope, key)
        return self.unknown_call(node, scope, args, kwargs, key)

    def torch_or_unresolved(self, func: cst.BaseExpression) -> bool:
        """A local_map entry point from torch or a library known to wrap it (api.LOCAL_MAP_PACKAGES),
        or a name not imported at all (star imports): not another library's."""
        head = (dotted(func) or "").split(".", 1)[0]
        if head not in self.imports:
            return True
        root = self.imports[head].split(".", 1)[0]
        return root in api.LOCAL_MAP_PACKAGES

    def is_torch(self, func: cst.BaseExpression) -> bool:
        return _is_torch_name(self.qualify(func) or "")

    def torch_op(self, key: str, args: list[V], kwargs: dict[str, V], node: cst.Call) -> V:
        operands = [*args, *kwargs.values()]
        if key in api.OBSERVER_TORCH_FUNCTIONS:
            return V(kind="bool")  # a comparison result carries no gradient
        q = self.qualify(node.func) or ""
        if q.startswith(api.SYNCED_MODULE_PREFIXES) or key.endswith(api.SYNCED_CALL_SUBSTRINGS):
            for v in operands:
                self.use(v)
            return dataclasses.replace(combine(operands, kind="tensor"), synced=True, rankdep="")
        if q.startswith("torch.distributed") and not any(v.kind in ("tensor", "dtensor", "inttensor") or v.exits for v in operands):
            # process-group plumbing (get_world_size, new_group, ...): no tensor comes out
            return V(kind="int" if key.startswith("get_") else "unknown")
        if any(s in key for s in api.RANKDEP_CALL_SUBSTRINGS):
            res = combine(operands)
            return dataclasses.replace(res, rankdep="all-to-all / token dispatch output")
        self.meet(operands, node)
        if key in api.LOSS_FUNCTIONS:
            for v in operands:
                self.use(v)
            # a loss of replicated inputs is the same scalar on every rank: returning it does not
            # hand the local tensor to unseen consumers
            return V(kind="tensor", rankdep=next((v.rankdep for v in operands if v.rankdep), ""))
        for v in operands:
            self.use(v)
        dtype = kwargs.get("dtype")
        if dtype is not None and self.int_dtype(node):
            return combine(operands, kind="inttensor")
        if key in ("topk", "sort", "max", "min", "kthvalue", "mode", "median"):
            base = combine(operands)
            return V(kind="tuple", elems=(base, V(kind="inttensor", rank=base.rank)), exits=base.exits, rankdep=base.rankdep)
        if key in ("zeros", "ones", "empty", "full", "randn", "rand", "zeros_like", "empty_like", "ones_like", "tensor", "as_tensor"):
            rg = kwarg(node, "requires_grad")
            fresh = rg is None or self.literal_bool(rg.value) is False  # a new tensor has no history
            return V(kind="tensor", rank=next((a.rank for a in operands if a.rank), ""), nograd=fresh)
        module = q.rsplit(".", 1)[0]
        if module not in api.TENSOR_NAMESPACES and not any(v.kind in ("tensor", "dtensor", "inttensor") or v.exits for v in operands):
            return combine(operands, kind="unknown")  # torch.testing / torch.utils helpers: not a tensor op
        return self.dtensor_result(operands) or combine(operands)

    @staticmethod
    def dtensor_result(operands: Sequence[V]) -> V | None:
        """A torch op on DTensors returns a DTensor: Replicate when every DTensor operand is
        Replicate (sharding propagation keeps it), otherwise a placement we do not infer."""
        dts = [v for v in operands if v.kind == "dtensor"]
        if not dts:
            return None
        if all(v.pl == frozenset("R") for v in dts):
            return V(kind="dtensor", pl=frozenset("R"))
        return V(kind="dtensor", pl=frozenset(ANY))

    def int_dtype(self, node: cst.Call) -> bool:
        a = kwarg(node, "dtype")
        if a is None:
            return False
        name = (dotted(a.value) or "").rsplit(".", 1)[-1]
        return name in api.INT_DTYPES

    def method_call(self, method: str, recv: V, args: list[V], kwargs: dict[str, V], node: cst.Call,
                    scope: Scope, key: str | None) -> V:
        if method in api.EXIT_METHODS:
            return self.exit_site(method, recv, node, scope)
        if method in api.DTENSOR_REDISTRIBUTE:
            pl = placements_of(args[1] if len(args) > 1 else kwargs.get("placements"))
            if not pl and len(args) == 1 and args[0].kind == "placements":
                pl = args[0].pl
            return V(kind="dtensor", pl=pl or frozenset(ANY), param=recv.param)
        receiver = node.func.value if isinstance(node.func, cst.Attribute) else None
        if method in api.RANK_METHODS and not args and method != "rank" or (method == "rank" and not args and not kwargs):
            kind = self.rank_kind(receiver)
            if method == "get_coordinate":
                return V(kind="list", rank=kind)
            return V(kind="int", rank=kind)
        if method in ("get_local_rank", "get_rank"):
            return V(kind="int", rank=self.rank_kind(receiver, *(a.value for a in node.args)))
        if method == "get" and recv.kind == "unknown" and args:
            first = node.args[0].value
            if isinstance(first, cst.SimpleString) and first.evaluated_value in api.RANK_ENV_VARS:
                return V(kind="int", rank="call")
        if method in api.METADATA_METHODS:
            return V(kind="int" if method != "tolist" else "list")
        if method in api.DETACH_METHODS:
            return V(kind="tensor", rankdep=recv.rankdep, nograd=True)
        if "state_dict" in method:
            return V(kind="dict", nograd=True)
        if method in api.LIST_METHODS:
            return V(kind="list", rank=recv.rank)
        if method in api.INT_TENSOR_METHODS or (method in ("to", "type") and self.int_dtype_args(node)):
            return combine([recv, *args], kind="inttensor")
        if method in ("split", "rsplit") and recv.kind == "str" or (method == "split" and node.args and isinstance(node.args[0].value, cst.SimpleString)):
            return V(kind="list")
        if method in api.SPLIT_FUNCTIONS and recv.kind not in ("unknown", "list", "str") or (method in ("chunk", "tensor_split", "unbind") ):
            return V(kind="chunks", chunk_op=method, parent=recv, exits=recv.exits, rankdep=recv.rankdep, param=recv.param)
        if method == "split" and recv.kind == "unknown":
            return V(kind="chunks", chunk_op=method, parent=recv, exits=recv.exits, rankdep=recv.rankdep)
        if method == "narrow" and len(args) >= 2 and (args[1].rank or (len(args) > 2 and args[2].rank)):
            site = frozenset()
            if recv.kind not in ("inttensor", "list"):
                site = self.rank_slice(node, scope, "narrow", recv, V(rank=args[1].rank or args[2].rank))
            return V(kind="tensor", exits=recv.exits, rankdep="a rank-indexed slice", slices=site)
        if method == "backward":
            self.use(recv)
            return UNKNOWN
        if method in ("copy_", "set_"):
            for v in args:
                self.use(v)  # copying values into a buffer or parameter records no gradient edge back
            return recv
        if method in ("append", "extend", "add", "insert", "put", "update") and recv.kind in ("list", "dict", "unknown", "tuple"):
            for a in args:
                self.escape(a, node, f"added to a container with .{method}()")
            return UNKNOWN
        if recv.kind in ("tensor", "dtensor", "inttensor") or recv.exits or recv.rankdep:
            # a tensor method: data flows from receiver and arguments into the result
            operands = [recv, *args, *kwargs.values()]
            self.meet(operands, node)
            for v in operands:
                self.use(v)
            if method.endswith("_") and isinstance(node.func, cst.Attribute) and isinstance(node.func.value, cst.Name):
                res = combine(operands, kind=recv.kind if recv.kind != "unknown" else "tensor")
                scope.env[node.func.value.value] = res  # in-place ops taint the receiver
                return res
            res = combine(operands, kind="inttensor" if recv.kind == "inttensor" else "tensor")
            if method in ("contiguous", "clone", "view", "reshape") and recv.slices:
                res = dataclasses.replace(res, slices=recv.slices)  # still the slice itself
            return res
        if recv.kind == "module":
            operands = [recv, *args]
            self.meet(operands, node)
            return combine(operands)
        if any(s in method for s in api.RANKDEP_CALL_SUBSTRINGS):
            return dataclasses.replace(combine([*args, *kwargs.values()]), rankdep="all-to-all / token dispatch output")
        return self.unknown_call(node, scope, args, kwargs, key)

    def int_dtype_args(self, node: cst.Call) -> bool:
        for a in node.args:
            name = (dotted(a.value) or "").rsplit(".", 1)[-1]
            if name in api.INT_DTYPES and (dotted(a.value) or "").startswith(("torch", "dtype")):
                return True
        return self.int_dtype(node)

    def unknown_call(self, node: cst.Call, scope: Scope, args: list[V], kwargs: dict[str, V], key: str | None) -> V:
        callee = dotted(node.func) or "a call"
        name = callee.rsplit(".", 1)[-1]
        operands = [*args, *kwargs.values()]
        if name in api.OBSERVER_CALLS or name.startswith("assert"):
            return UNKNOWN
        if name.endswith(api.SYNCED_CALL_SUBSTRINGS) or (
            name == "apply" and any(s in callee.lower().replace("_", "") for s in (m.replace("_", "") for m in api.SYNCED_FUNCTION_CLASS_SUBSTRINGS))
        ):
            for v in operands:
                self.use(v)
            return dataclasses.replace(combine(operands), synced=True, rankdep="")
        if any(s in name.lower() for s in api.RANKDEP_CALL_SUBSTRINGS):
            res = combine(operands)
            return dataclasses.replace(res, rankdep="all-to-all / token dispatch output")
        self.meet(operands, node)
        for v in operands:
            self.escape(v, node, f"passed to {callee}()")
        # capitalised callee: maybe a project ParallelStyle (resolved by the project index)
        if name[:1].isupper() and isinstance(node.func, (cst.Name, cst.Attribute)):
            q = self.qualify(node.func) or name
            if not q.startswith(("torch", "nn.", "typing", "collections")) and not is_self(node.func):
                flags = {k: self.literal_bool(a.value) for a in node.args if (k := a.keyword and a.keyword.value) and k.startswith("use_local")}
                self.add_site(node, scope, "style_candidate", ref=q, name=name, plan_key=self._plan_key, flags=flags,
                              local_class=name in self.local_classes and "." not in (dotted(node.func) or ""))
        if any(v.kind in ("placement", "placements") for v in kwargs.values()):
            # a config object built with placement fields: `cfg.act` reads them back later
            return V(kind="obj", fields=tuple(kwargs.items()))
        # what a project function returns is unknown, but data flows through it
        return combine(operands, kind="tensor" if any(v.exits for v in operands) else "unknown")

    # -- site builders -------------------------------------------------------------------------------
    def exit_site(self, method: str, recv: V, node: cst.Call, scope: Scope) -> V:
        if recv.nograd or recv.kind == "inttensor":
            # no gradient flows back through it (a .grad, a detached or integer tensor)
            return V(kind=recv.kind if recv.kind == "inttensor" else "tensor", nograd=True, rankdep=recv.rankdep)
        gp = kwarg(node, "grad_placements")
        has_grad = gp is not None and not (isinstance(gp.value, cst.Name) and gp.value.value == "None")
        pl = recv.pl if recv.kind == "dtensor" else frozenset()
        known = pl and ANY not in pl
        all_shard = known and pl == frozenset("S")
        if method == "to_local" and all_shard:
            return V(kind="tensor", rankdep="the local shard of a Shard DTensor", param=recv.param)
        if has_grad:
            mixed_shard = known and "S" in pl and method == "to_local"
            return V(kind="tensor", rankdep="the local shard of a Shard DTensor" if mixed_shard else "")
        idx = self.add_site(
            node, scope, "exit", api=method,
            placements=sorted(pl) if known else None,
            param=recv.param,
            cls=scope.cls.qualname if scope.cls is not None else None,
            used=False,
            nargs=len(node.args),
        )
        if scope.cls is not None:
            scope.cls.bare_exits.append(idx)
        rankdep = "the local shard of a Shard DTensor" if (method == "to_local" and known and "S" in pl) else ""
        return V(kind="tensor", exits=frozenset([idx]), rankdep=rankdep)

    def rank_kind(self, *nodes: cst.CSTNode | None) -> str:
        """"data" when the rank comes from a mesh dim / group / variable that shards the data
        (cp, sp, dp, ...): slicing activations by it is the intended per-rank share."""
        for n in nodes:
            if n is None:
                continue
            if is_data_parallel_name(self.module.code_for_node(n)):
                return "data"
        return "call"

    def literal_bool(self, node: cst.BaseExpression) -> bool | None:
        if isinstance(node, cst.Name) and node.value in ("True", "False"):
            return node.value == "True"
        return None

    def style_site(self, node: cst.Call, scope: Scope, style: str, args: list[V], kwargs: dict[str, V]) -> None:
        flags = {}
        for flag, (layout_kw, default_layout, default_flag) in api.STYLES[style].items():
            a = kwarg(node, flag)
            explicit = self.literal_bool(a.value) if a is not None else None
            if a is None:
                value, how = default_flag, "default"
            elif explicit is None:
                value, how = True, "variable"  # a variable: may be True
            else:
                value, how = explicit, "explicit"
            layout = kwargs.get(layout_kw) if layout_kw else None
            if layout is not None:
                pl = sorted(placements_of(layout)) or ["?"]
                layout_how = "explicit"
            else:
                pl = [default_layout] if default_layout else ["?"]
                layout_how = "default"
            flags[flag] = {"value": value, "how": how, "layout": pl, "layout_how": layout_how, "layout_kw": layout_kw}
        self.add_site(node, scope, "style", style=style, flags=flags, plan_key=self._plan_key)

    def local_map_site(self, node: cst.Call, scope: Scope, args: list[V], kwargs: dict[str, V], partial: bool = False) -> None:
        names = api.LOCAL_MAP_PARAMS
        given: dict[str, V] = {}
        for i, v in enumerate(args):
            if i < len(names):
                given[names[i]] = v
        given.update(kwargs)
        in_pl = given.get("in_placements")
        grad = given.get("in_grad_placements")
        if grad is None:
            grad_state = "absent"
        elif grad.kind == "none":
            grad_state = "none"
        elif grad.maybe_none:
            grad_state = "none on some branch"
        else:
            grad_state = "set"
        pl = sorted(in_pl.pl) if in_pl is not None and in_pl.kind == "placements" else None
        self.add_site(node, scope, "local_map", grad=grad_state, in_placements=pl, partial=partial)

    # -- output -----------------------------------------------------------------------------------------
    def facts(self, positions: str = "none") -> dict[str, Any]:
        """Sites, with positions per `positions`: "none", "sites" (blocks holding a site a rule
        reads directly) or "all" (also calls that may apply a project style). Positions cost a
        code-generating pass over a block, so the engine asks for them only where needed."""
        needed = {
            b for b, site in zip(self.site_blocks, self.sites)
            if positions == "all" or (positions == "sites" and site["kind"] != "style_candidate")
        }
        resolved: dict[Any, Any] = {}

        def locate(b: int, unit) -> tuple[Any, int, int]:
            """Position table, line offset and column offset for a site in block b / method unit."""
            if unit is not None:
                # one method, code-generated on its own: dedented by its class indent, and its
                # leading blank/comment lines come first
                fn, line0, indent = unit
                if id(fn) not in resolved:
                    resolved[id(fn)] = MetadataWrapper(cst.Module(body=[fn]), unsafe_skip_copy=True).resolve(PositionProvider)
                return resolved[id(fn)], line0 - len(fn.leading_lines), indent
            if b not in resolved:
                resolved[b] = MetadataWrapper(self.blocks[b][1], unsafe_skip_copy=True).resolve(PositionProvider)
            return resolved[b], self.blocks[b][0] - 1, 0

        partial = False
        for i, (site, n, b, unit) in enumerate(zip(self.sites, self.site_nodes, self.site_blocks, self.site_units)):
            if b not in needed:
                site["pos"] = None
                partial = True
                continue
            positions, dl, dc = locate(b, unit)
            r = positions[n]
            site["pos"] = [r.start.line + dl, r.start.column + 1 + dc, r.end.line + dl, r.end.column + 1 + dc]
            for key, rn in self.related_nodes.get(i, ()):
                site.setdefault(f"{key}_lines", []).append(positions[rn].start.line + dl)
        classes = [
            {"name": c.name, "qualname": c.qualname, "bases": c.bases, "torch_style": c.is_torch_style, "bare_exits": c.bare_exits}
            for c in self.classes
        ]
        return {"sites": self.sites, "classes": classes, "unpositioned": partial}


def analyze_blocks(blocks: Sequence[tuple[int, cst.Module, list | None]], positions: str = "none") -> dict[str, Any]:
    a = FileAnalyzer(blocks)
    a.run()
    return a.facts(positions)


def analyze_module(module: cst.Module) -> dict[str, Any]:
    return analyze_blocks([(1, module, None)], positions="all")
