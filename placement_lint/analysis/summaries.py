"""Per-function summaries: what a function does with each of its parameters, so that the project
index can follow a local tensor into a callee defined in this file or another one.

Each parameter of an analysed function gets a *slot*. The parameter's value carries the slot in
`V.ptaint`, which flows through operations like an exit's taint does. A slot records what the
parameter met (rank-dependent data, a rank slice: the same evidence an exit site collects),
whether it is returned, and the project calls it is passed to (followed transitively by
placement_lint.callgraph). A call that receives an exit's local tensor is recorded on the exit
site the same way (`calls`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import libcst as cst

from placement_lint import api
from placement_lint.analysis.scopes import Scope
from placement_lint.analysis.sites import CITED
from placement_lint.analysis.syntax import is_int_name, is_self
from placement_lint.analysis.values import UNKNOWN, V, is_torch_name

#: evidence kept per slot and per key (a summary, not a trace)
MAX_EVIDENCE = 4


class SummariesMixin:
    """Mixin of FileAnalyzer (placement_lint.analyzer)."""

    def bind_params(self, params: cst.Parameters, scope: Scope, symbol: str | None = None, method: bool = False) -> None:
        """Bind a def's (or lambda's) parameters in `scope`; with `symbol`, give each a slot."""
        plain = [*params.posonly_params, *params.params, *params.kwonly_params]
        names = []
        for i, p in enumerate(plain):
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
            names.append(name)
            if symbol is not None and not (method and i == 0):
                slot = len(self.slots)
                self.slots.append({"index": i, "name": name, "fn": symbol})
                v = dataclasses.replace(v, ptaint=frozenset([slot]))
            scope.env[name] = v
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                scope.env[star.name.value] = UNKNOWN
        if symbol is not None:
            self.functions[symbol] = {
                "params": names,
                "method": method,
                "cls": scope.cls.qualname if scope.cls is not None else None,
            }

    def note_slots(self, slots: frozenset, key: str, node: cst.CSTNode, why: Any) -> None:
        for s in slots:
            rec = self.slots[s]
            items = rec.setdefault(key, [])
            if len(items) < MAX_EVIDENCE and why not in items:
                items.append(why)
                records = self.slot_nodes.setdefault(s, [])
                records.append((key, node, self.place()))
                if self.lazy:
                    self.want(("slot", s, len(records) - 1), key in CITED and self.positions != "none")

    def record_call(self, node: cst.Call, scope: Scope, operands: list[tuple[int | str, V]]) -> None:
        """A call the analyzer cannot see into receives exits' local tensors or parameters: keep
        where it goes (callee as written, import-qualified) so the index can follow it."""
        if not any(v.exits or v.ptaint for _, v in operands):
            return
        func = node.func
        if isinstance(func, cst.Attribute) and is_self(func.value):
            ref = f"self.{func.attr.value}"
            attr = scope.cls.attrs.get(func.attr.value) if scope.cls is not None else None
            if attr is not None and is_torch_name(attr.callee) and attr.kind != "partial":
                ref = attr.callee  # a torch submodule (self.norm = nn.LayerNorm(d)): replicated work
        else:
            ref = self.qualify(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        if not ref:
            return
        # arguments that are all-Shard DTensors: their local tensor in the callee is this rank's shard
        shard = [a for a, v in operands if v.kind == "dtensor" and v.pl == frozenset("S")]
        for arg, v in operands:
            call = {"ref": ref, "arg": arg, "from": scope.symbol,
                    "cls": scope.cls.qualname if scope.cls is not None else None}
            if shard:
                call["shard_args"] = shard
            for i in v.exits:
                site = self.sites[i]
                calls = site.setdefault("calls", [])
                if len(calls) < MAX_EVIDENCE and call not in calls:
                    calls.append(call)
                    self.relate(i, "calls", node)
            self.note_slots(v.ptaint, "calls", node, call)

    def summaries(self, position) -> dict[str, Any]:
        """The functions analysed, each with its slots' evidence (positions by `position(block,
        unit, node)`, or None when this pass computes none)."""
        out = {sym: dict(info, slots={}) for sym, info in self.functions.items()}
        for s, rec in enumerate(self.slots):
            if len(rec) <= 3:
                continue  # nothing happened to this parameter
            entry = {k: v for k, v in rec.items() if k not in ("fn",)}
            if position is not None:
                entry["lines"] = {}
                for key, node, (b, unit) in self.slot_nodes.get(s, ()):  # each where it was noted
                    if key in CITED:
                        entry["lines"].setdefault(key, []).append(position(b, unit, node))
            out[rec["fn"]]["slots"][str(rec["index"])] = entry
        for sym, refs in self.returns_styles.items():
            if sym in out:
                out[sym]["returns_styles"] = sorted(refs)
        return out

