"""Statements: blocks, branches (joined), assignments and binding, imports, classes and functions."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import libcst as cst

from placement_lint import api
from placement_lint.analysis.scopes import ClassInfo, Scope
from placement_lint.analysis.syntax import dotted, is_data_parallel_name, is_int_name, is_self, module_ref, string_value
from placement_lint.analysis.values import UNKNOWN, V, capped, combine, is_torch_name, join


class StatementsMixin:
    """Mixin of FileAnalyzer (placement_lint.analyzer)."""

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
            # a closure in a method reads the method's `self`: its attributes are the class's
            # (unless it names a `self` of its own)
            own_self = any(p.name.value in ("self", "cls") for p in (*stmt.params.posonly_params, *stmt.params.params))
            self.defer((self.block_index, stmt, scope, symbol, None if own_self else scope.cls, guard))
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
        elif isinstance(stmt, cst.BaseSmallStatement):
            self.small(stmt, scope)  # a one-line block (`if c: y = x.to_local()`) holds them bare
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
                self.note_slots(v.ptaint, "returned", node, True)
                if v.styles:  # a helper that builds a style instance for its callers' plans
                    self.returns_styles.setdefault(scope.symbol, set()).update(self.sites[i]["ref"] for i in v.styles)
                    for i in v.styles:
                        self.sites[i]["applied_elsewhere"] = True  # where the caller applies it
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
        self.shared_writes += 1  # (a function's import is seen by every function analysed after it)
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
            if key in api.STYLE_BASES and (is_torch_name(q) or q == key or "." in q):
                torch_style = True
            if key in api.AUTOGRAD_FUNCTION_BASES and ("autograd" in q or q == key):
                autograd_fn = True
        info = ClassInfo(node.name.value, qual, bases, node, is_torch_style=torch_style, is_autograd_function=autograd_fn)
        self.classes.append(info)
        self.shared_writes += 1
        # attributes a base class of this file sets (in its __init__ or elsewhere) are inherited
        for b in bases:
            base_info = self.local_classes.get(b)
            if isinstance(base_info, ClassInfo) and base_info is not info:
                for k, v in base_info.attrs.items():
                    info.attrs.setdefault(k, v)
        self.local_classes[node.name.value] = info
        scope.env[node.name.value] = V(kind="class")
        self.prescan_rank_attrs(node, info)
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
        if self.own is not None:
            self.fn_entries.append((symbol, self.entry_key))
        static = any((dotted(d.decorator) or "") in ("staticmethod", "functools.staticmethod") for d in fn.decorators)
        closure = cls is not None and parent.cls is cls  # defined in a method (or a closure of one)
        self.bind_params(params, scope, symbol, method=cls is not None and not static and not closure)
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
            # a name may say "integer data" only where the value says nothing: never for a value
            # the code derives from the rank (`offset = rank * n`) or from an exit
            if v.kind in ("unknown", "tensor") and not v.exits and is_int_name(name.lower()) and not v.rankdep and not v.rank:
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
                    ev = V(kind="tensor", exits=v.exits, ptaint=v.ptaint, rank=v.rank, rankdep=v.rankdep)
                elif v.kind in ("inttensor", "tensor", "dtensor"):
                    ev = V(kind=v.kind, exits=v.exits, ptaint=v.ptaint, rank=v.rank, rankdep=v.rankdep)
                else:
                    ev = V(kind="int" if v.rank and not v.exits else "unknown", exits=v.exits, ptaint=v.ptaint, rank=v.rank, rankdep=v.rankdep)
                self.bind(e, ev, scope)
        elif isinstance(target, cst.Attribute):
            if is_self(target.value) and scope.cls is not None:
                # a stored parameter outlives the call: it is no longer this call's argument
                scope.cls.attrs[target.attr.value] = dataclasses.replace(v, ptaint=frozenset()) if v.ptaint else v
                if v.exits:
                    self.escape(v, target, f"stored in self.{target.attr.value}")
            else:
                self.expr(target.value, scope)
                if v.exits:
                    self.escape(v, target, f"stored in {dotted(target) or 'an attribute'}")
        elif isinstance(target, cst.Subscript):
            base = self.expr(target.value, scope)
            idx = self.subscript_index(target, scope)
            key = target.slice[0].slice if len(target.slice) == 1 else None
            if v.styles and isinstance(key, cst.Index) and isinstance(key.value, cst.SimpleString):
                # `plan["moe.router.gate"] = style`: the style is applied at this entry
                prev = self._plan_key
                self._plan_key = string_value(key.value)
                if self._plan_key is not None:
                    self.apply_styles(v, target, scope)
                self._plan_key = prev
            if idx.rank and base.kind not in ("list", "dict", "inttensor"):
                self.rank_slice(target, scope, "slice_assign" if self.has_slice(target) else "index_assign", base, idx, value=v)
            self.use(v)
            if v.exits:
                name = target.value
                if isinstance(name, cst.Name):
                    old = scope.lookup(name.value) or UNKNOWN
                    scope.env[name.value] = dataclasses.replace(old, exits=capped(old.exits | v.exits), ptaint=old.ptaint | v.ptaint, rankdep=old.rankdep or v.rankdep)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, UNKNOWN, scope)

    def escape(self, v: V, node: cst.CSTNode, how: str) -> None:
        if v.exits:
            self.note(v.exits, "escapes", node, how)
        for e in v.elems:
            self.escape(e, node, how)

    def prescan_rank_attrs(self, node: cst.ClassDef, info: ClassInfo) -> None:
        """Attributes any method assigns from a rank API (`self.tp_rank = dist.get_rank(g)` in a
        `setup()`), known before the methods run: methods are analysed once, in an order that
        cannot follow every assignment, so these are read off the syntax first."""
        rank_calls = api.RANK_FUNCTIONS | api.RANK_METHODS | api.RANK_METHODS_WITH_ARGS

        def from_rank(expr: cst.BaseExpression) -> bool:
            # a walk over the expression shapes a rank is computed with (a LibCST visitor rebuilds
            # every node it passes: too slow for every assignment of every class)
            stack = [expr]
            while stack:
                n = stack.pop()
                if isinstance(n, cst.Call):
                    if (dotted(n.func) or "").rsplit(".", 1)[-1] in rank_calls:
                        return True
                    stack.append(n.func)
                    stack.extend(a.value for a in n.args)
                elif isinstance(n, (cst.Attribute, cst.Subscript)):
                    stack.append(n.value)
                elif isinstance(n, cst.BinaryOperation):
                    stack.extend((n.left, n.right))
                elif isinstance(n, cst.UnaryOperation):
                    stack.append(n.expression)
                elif isinstance(n, (cst.Tuple, cst.List)):
                    stack.extend(e.value for e in n.elements)
                elif isinstance(n, cst.IfExp):
                    stack.extend((n.body, n.orelse))
            return False

        def targets(t: cst.BaseExpression) -> list[str]:
            if isinstance(t, cst.Attribute) and is_self(t.value):
                return [t.attr.value]
            if isinstance(t, (cst.Tuple, cst.List)):
                return [n for e in t.elements for n in targets(e.value)]
            return []

        def walk(body) -> None:
            for stmt in body:
                if isinstance(stmt, cst.SimpleStatementLine):
                    for small in stmt.body:
                        if not isinstance(small, cst.Assign):
                            continue
                        names = [n for t in small.targets for n in targets(t.target)]
                        if names and from_rank(small.value):  # `self.` targets first: cheap
                            for name in names:
                                info.attrs.setdefault(name, V(kind="int", rank="call"))
                elif isinstance(stmt, (cst.If, cst.For, cst.While, cst.With, cst.Try)):
                    walk(stmt.body.body)

        for member in node.body.body:
            if isinstance(member, cst.FunctionDef) and member.name.value != "__init__":
                walk(member.body.body)
