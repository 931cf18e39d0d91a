"""Expressions: names, attributes, operators, literals, comprehensions, subscripts and rank slices."""

from __future__ import annotations

import dataclasses

import libcst as cst

from placement_lint import api
from placement_lint.analysis.scopes import Scope
from placement_lint.analysis.syntax import dotted, is_int_name, is_self, string_value
from placement_lint.analysis.values import ANY, NONE, UNKNOWN, V, capped, combine, is_torch_name, join


class ExpressionsMixin:
    """Mixin of FileAnalyzer (placement_lint.analyzer)."""

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
            if kinds == {"int", "unknown"} and isinstance(node.operator, (cst.FloorDivide, cst.Modulo)) and not (left.exits or right.exits or left.rankdep or right.rankdep):
                return combine([left, right], kind="int")  # `total // mesh.size()`: a size, not a tensor
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
            return V(kind=kind, elems=elems, exits=capped(frozenset().union(*(e.exits for e in elems))) if elems else frozenset(),
                     ptaint=frozenset().union(*(e.ptaint for e in elems)) if elems else frozenset(),
                     styles=frozenset().union(*(e.styles for e in elems)) if elems else frozenset(),
                     rank="", rankdep="")
        if isinstance(node, cst.Dict):
            styles: frozenset = frozenset()  # style instances kept in the dict (`STYLES["gate"]` later)
            classes: set[str] = set()  # project classes kept in the dict (`STYLES[kind]()` later)
            for el in node.elements:
                if isinstance(el, cst.DictElement):
                    key = el.key
                    prev, prev_elem = self._plan_key, self._plan_elem
                    if isinstance(key, cst.SimpleString):
                        self._plan_key = string_value(key)
                        self._plan_elem = el
                    self.expr(key, scope)
                    v = self.expr(el.value, scope)
                    if self._plan_key is not None:
                        self.apply_styles(v, el, scope)
                    self._plan_key, self._plan_elem = prev, prev_elem
                    styles |= v.styles
                    ref = self.class_ref(el.value, scope)
                    if ref:
                        classes.add(ref)
                else:
                    self.expr(el.value, scope)
            return V(kind="dict", styles=styles, classes=frozenset(classes))
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
                return V(kind="dict", exits=val.exits, ptaint=val.ptaint)
            val = self.expr(node.elt, inner)
            return V(kind="list", exits=val.exits, ptaint=val.ptaint, rank=val.rank, rankdep=val.rankdep)
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
            # its body is analysed where it is written, seeing the names it captures; its
            # parameters are bound as a def's are
            inner = Scope(scope.symbol, scope, scope.cls, scope.guard)
            self.bind_params(node.params, inner)
            body = self.expr(node.body, inner)
            return V(kind="function", exits=body.exits, ptaint=body.ptaint)
        if isinstance(node, cst.StarredElement):
            return self.expr(node.value, scope)
        return UNKNOWN

    def class_ref(self, node: cst.BaseExpression, scope: Scope) -> str | None:
        """The import-qualified name of a class written as a value (`NoParallel`, `pp.Style`):
        capitalised, not torch's, not a local variable."""
        if not isinstance(node, (cst.Name, cst.Attribute)):
            return None
        q = self.qualify(node)
        if not q or not q.rsplit(".", 1)[-1][:1].isupper() or is_torch_name(q) or q.split(".", 1)[0] in api.NOT_PROJECT_ROOTS:
            return None
        if isinstance(node, cst.Name):
            bound = scope.lookup(node.value)
            if bound is not None and bound.kind != "class":
                return None  # a variable, not a class
        return q

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
        if attr in self.rank_fields and base.kind in ("unknown", "obj") and not base.exits:
            # a field this file fills from a rank API (`ParallelInfo(tp_rank=mesh.get_local_rank())`)
            return V(kind="int", rank="call")
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
            return V(kind="tensor", exits=it.exits, ptaint=it.ptaint, rankdep=it.rankdep)
        if it.kind == "placements":
            return V(kind="placement", pl=it.pl)
        return V(kind="unknown", exits=it.exits, ptaint=it.ptaint, rank=it.rank, rankdep=it.rankdep)

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
        return V(kind="index", rank=rank, exits=capped(frozenset().union(*(v.exits for v in vals))) if vals else frozenset(),
                 rankdep=rankdep)

    def subscript(self, node: cst.Subscript, scope: Scope) -> V:
        base = self.expr(node.value, scope)
        idx = self.subscript_index(node, scope)
        if base.kind in ("placements",):
            return V(kind="placement", pl=base.pl)
        if base.kind in ("meta", "str", "dict"):
            if base.kind == "meta":
                return V(kind="int", rank=idx.rank)
            return V(nograd=base.nograd, styles=base.styles, classes=base.classes)
        if base.kind == "list" or base.kind == "tuple":
            if base.elems and isinstance(node.slice[0].slice, cst.Index):
                s = node.slice[0].slice.value
                if isinstance(s, cst.Integer) and len(node.slice) == 1:
                    try:
                        return base.elems[int(s.value)]
                    except (IndexError, ValueError):
                        pass
            if self.has_slice(node) and len(node.slice) == 1:
                return V(kind="list", rank=base.rank, exits=base.exits, ptaint=base.ptaint)  # a slice of a list is a list
            return V(kind="int" if idx.rank else "unknown", rank=idx.rank or base.rank, exits=base.exits, ptaint=base.ptaint)
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
                return V(kind="tensor", exits=parent.exits, ptaint=parent.ptaint, rankdep="a rank-indexed slice", slices=site)
            site = self.rank_slice(node, scope, "slice" if self.has_slice(node) else "index", base, idx)
            return V(kind="tensor", exits=base.exits, ptaint=base.ptaint, rankdep="a rank-indexed slice", param=False, slices=site)
        if idx.rankdep and (base.exits or base.ptaint):
            self.note(base.exits, "meets", node, f"is indexed by {idx.rankdep}")
            self.note_slots(base.ptaint, "meets", node, f"is indexed by {idx.rankdep}")
        if base.kind == "chunks":
            parent = base.parent or UNKNOWN
            return V(kind="tensor", exits=parent.exits, ptaint=parent.ptaint, rankdep=parent.rankdep, rank=parent.rank)
        kind = base.kind if base.kind in ("tensor", "inttensor", "dtensor") else ("tensor" if base.exits else "unknown")
        return V(kind=kind, exits=capped(base.exits | idx.exits), ptaint=base.ptaint, rank=base.rank, rankdep=base.rankdep or idx.rankdep)

    @staticmethod
    def has_slice(node: cst.Subscript) -> bool:
        return any(isinstance(el.slice, cst.Slice) for el in node.slice)

    def rank_slice(self, node: cst.CSTNode, scope: Scope, op: str, receiver: V, idx: V, value: V | None = None) -> frozenset:
        """A rank-indexed slice. On a local tensor that left DTensor it is evidence for that exit
        (the DTP101 finding covers it, one root cause one finding); otherwise it is a site."""
        self.note_slots(receiver.ptaint, "meets", node, "is sliced at a rank-derived position")
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
