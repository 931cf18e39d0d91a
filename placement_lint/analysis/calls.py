"""Calls: torch APIs (from api.py tables), DTensor methods, and calls the analyzer cannot see into."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import libcst as cst

from placement_lint import api
from placement_lint.analysis.scopes import Scope
from placement_lint.analysis.syntax import dotted, is_self, kwarg, string_value
from placement_lint.analysis.values import in_package, ANY, UNKNOWN, V, combine, is_torch_name, placements_of


class CallsMixin:
    """Mixin of FileAnalyzer (placement_lint.analyzer)."""

    # -- calls -------------------------------------------------------------------------------------
    def call(self, node: cst.Call, scope: Scope) -> V:
        func = node.func
        method = func.attr.value if isinstance(func, cst.Attribute) else None
        recv: V | None = None
        if isinstance(func, cst.Attribute):
            # evaluate the receiver only when it is an expression, not a module path like torch.nn
            q = self.qualify(func.value)
            if q is None or not (q.split(".")[0] in self.imports.values() or is_torch_name(q) or q.split(".")[0] in ("F", "nn", "dist", "os")):
                recv = self.expr(func.value, scope)
        callee_expr = None
        if not isinstance(func, (cst.Name, cst.Attribute)):
            callee_expr = self.expr(func, scope)  # `STYLES[kind]()`: a class picked from a registry
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
        if callee_expr is not None and callee_expr.classes:
            return self.registry_call(node, scope, callee_expr, args, kwargs)
        return self.api_call(key, method, recv, args, kwargs, node, scope)

    def registry_call(self, node: cst.Call, scope: Scope, callee: V, args: list[V], kwargs: dict[str, V]) -> V:
        """An instance of one of the project classes a registry holds: each may be a style."""
        styles = frozenset(
            self.style_candidate(node, scope, ref, ref.rsplit(".", 1)[-1], local_class=False) for ref in sorted(callee.classes)
        )
        return dataclasses.replace(combine([*args, *kwargs.values()], kind="unknown"), styles=styles)

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
                return V(kind="chunks", chunk_op=key, parent=args[0], exits=args[0].exits, ptaint=args[0].ptaint, rankdep=args[0].rankdep)
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
        return is_torch_name(self.qualify(func) or "")

    def torch_op(self, key: str, args: list[V], kwargs: dict[str, V], node: cst.Call) -> V:
        operands = [*args, *kwargs.values()]
        if key in api.OBSERVER_TORCH_FUNCTIONS:
            return V(kind="bool")  # a comparison result carries no gradient
        q = self.qualify(node.func) or ""
        if any(in_package(q, m) for m in api.SYNCED_MODULES) or key.endswith(api.SYNCED_CALL_SUBSTRINGS):
            for v in operands:
                self.use(v)
            return dataclasses.replace(combine(operands, kind="tensor"), synced=True, rankdep="")
        if in_package(q, "torch.distributed") and not any(v.kind in ("tensor", "dtensor", "inttensor") or v.exits for v in operands):
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
            return V(kind="tuple", elems=(base, V(kind="inttensor", rank=base.rank)), exits=base.exits, ptaint=base.ptaint, rankdep=base.rankdep)
        if key in ("zeros", "ones", "empty", "full", "randn", "rand", "zeros_like", "empty_like", "ones_like", "tensor", "as_tensor"):
            rg = kwarg(node, "requires_grad")
            fresh = rg is None or self.literal_bool(rg.value) is False  # a new tensor has no history
            return V(kind="tensor", rank=next((a.rank for a in operands if a.rank), ""), nograd=fresh)
        module = q.rsplit(".", 1)[0]
        if module not in api.TENSOR_NAMESPACES and not any(v.kind in ("tensor", "dtensor", "inttensor") or v.exits for v in operands):
            if key[:1].isupper():
                return V(callee=q)  # an instance of a torch class (nn.LayerNorm(dim)): a torch module
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
        if method in api.RANK_METHODS and not args and not kwargs:
            kind = self.rank_kind(receiver)
            if method in api.RANK_SEQUENCE_METHODS:
                return V(kind="list", rank=kind)
            return V(kind="int", rank=kind)
        if method in api.RANK_METHODS_WITH_ARGS:
            return V(kind="int", rank=self.rank_kind(receiver, *(a.value for a in node.args)))
        if method == "get" and recv.kind == "unknown" and args:
            first = node.args[0].value
            if string_value(first) in api.RANK_ENV_VARS:
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
            return V(kind="chunks", chunk_op=method, parent=recv, exits=recv.exits, ptaint=recv.ptaint, rankdep=recv.rankdep, param=recv.param)
        if method == "split" and recv.kind == "unknown":
            return V(kind="chunks", chunk_op=method, parent=recv, exits=recv.exits, ptaint=recv.ptaint, rankdep=recv.rankdep)
        if method == "narrow" and len(args) >= 2 and (args[1].rank or (len(args) > 2 and args[2].rank)):
            site = frozenset()
            if recv.kind not in ("inttensor", "list"):
                site = self.rank_slice(node, scope, "narrow", recv, V(rank=args[1].rank or args[2].rank))
            return V(kind="tensor", exits=recv.exits, ptaint=recv.ptaint, rankdep="a rank-indexed slice", slices=site)
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
            if any(v.exits or v.ptaint for v in (*args, *kwargs.values())):
                self.record_call(node, scope, [*enumerate(args), *kwargs.items()])
            return dataclasses.replace(combine([*args, *kwargs.values()]), rankdep="all-to-all / token dispatch output")
        res = self.unknown_call(node, scope, args, kwargs, key)
        # a method of a value the analyzer cannot see into: the result derives from the receiver
        return dataclasses.replace(res, ptaint=res.ptaint | recv.ptaint) if recv.ptaint else res

    def int_dtype_args(self, node: cst.Call) -> bool:
        for a in node.args:
            name = (dotted(a.value) or "").rsplit(".", 1)[-1]
            if name in api.INT_DTYPES and (is_torch_name(dotted(a.value) or "") or (dotted(a.value) or "").startswith("dtype.")):
                return True
        return self.int_dtype(node)

    def unknown_call(self, node: cst.Call, scope: Scope, args: list[V], kwargs: dict[str, V], key: str | None) -> V:
        callee = dotted(node.func) or "a call"
        name = callee.rsplit(".", 1)[-1]
        operands = [*args, *kwargs.values()]
        if name in api.OBSERVER_CALLS or name.startswith("assert"):
            return UNKNOWN
        # where the values go, whatever the callee's name says: the index follows project functions
        if any(v.exits or v.ptaint for v in operands):
            self.record_call(node, scope, [*enumerate(args), *kwargs.items()])
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
        # a capitalised callee may be a project ParallelStyle, and a helper called at a plan entry
        # may build one (both resolved by the project index)
        styles = frozenset()
        if (name[:1].isupper() or self.in_plan_entry()) and isinstance(node.func, (cst.Name, cst.Attribute)):
            q = self.qualify(node.func) or name
            if not (is_torch_name(q) or q.split(".", 1)[0] in api.NOT_PROJECT_ROOTS) and not is_self(node.func):
                styles = frozenset([self.style_candidate(
                    node, scope, q, name, local_class=name in self.local_classes and "." not in (dotted(node.func) or ""),
                    via_call=not name[:1].isupper())])
        if any(v.kind in ("placement", "placements") for v in kwargs.values()):
            # a config object built with placement fields: `cfg.act` reads them back later
            return V(kind="obj", fields=tuple(kwargs.items()))
        # what a project function returns is unknown, but data flows through it
        res = combine(operands, kind="tensor" if any(v.exits for v in operands) else "unknown")
        return dataclasses.replace(res, styles=styles) if styles else res
