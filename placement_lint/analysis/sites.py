"""Sites: what the analyzer records for the rules (exits, rank slices, styles, local_map), the
evidence attached to them, and their positions."""

from __future__ import annotations

from typing import Any, Sequence

import libcst as cst

from placement_lint import api
from placement_lint.analysis.lazy import Placed
from placement_lint.analysis.positions import has_ranges, table
from placement_lint.analysis.scopes import Scope
from placement_lint.analysis.syntax import dotted, is_data_parallel_name, kwarg
from placement_lint.analysis.values import ANY, V, placements_of


#: summary evidence a finding cites with its line (a callee's rank-dependent use); the rest of a
#: summary (calls, returns) is followed, never shown, and costs no positions
CITED = ("meets", "meets_local_of")


class SitesMixin:
    """Mixin of FileAnalyzer (placement_lint.analyzer)."""

    # -- sites -----------------------------------------------------------------------------------
    def add_site(self, node: cst.CSTNode, scope: Scope, kind: str, **data: Any) -> int:
        site = {"kind": kind, "symbol": scope.symbol, "guard": scope.guard}
        site.update(data)
        self.sites.append(site)
        self.site_nodes.append(node)
        self.site_blocks.append(self.block_index)
        self.site_units.append(self.unit)
        if self.lazy:
            self.want(("site", len(self.sites) - 1), self.positions == "all" or (self.positions in ("sites", "free") and kind != "style_candidate"))
        return len(self.sites) - 1

    def place(self) -> tuple[int, Any]:
        """Where the node being evaluated lives (block, method unit). Evidence keeps its own place:
        an exit bound to `self.k` in __init__ is used in forward, another unit (or block) than
        its site's, and its position must come from that unit's table."""
        return self.block_index, self.unit

    def relate(self, i: int, key: str, node: cst.CSTNode) -> None:
        records = self.related_nodes.setdefault(i, [])
        records.append((key, node, self.place()))
        if self.lazy:  # (evidence for another block's site: this block's table is needed)
            self.want(("related", i, len(records) - 1), self.site_blocks[i] != self.block_index)

    def note(self, exits: frozenset, key: str, node: cst.CSTNode, why: str) -> None:
        for i in exits:
            site = self.sites[i]
            site["used"] = True
            if key == "use":
                continue
            site.setdefault(key, [])
            if len(site[key]) < 4:
                site[key].append(why)
                self.relate(i, key, node)

    def use(self, v: V) -> None:
        for i in v.exits:
            self.sites[i]["used"] = True

    def meet(self, operands: Sequence[V], node: cst.CSTNode) -> None:
        """Operands combined in one operation: exits (and parameters, for the function's summary)
        meeting rank-dependent data get noted."""
        for v in operands:
            if v.ptaint:
                why = next((o.rankdep for o in operands if o is not v and o.rankdep and not (o.ptaint & v.ptaint)), "")
                if why:
                    self.note_slots(v.ptaint, "meets", node, f"meets {why}")
                # the local tensor of another parameter: rank-dependent when a caller passes a
                # Shard DTensor there (decided per call by the index)
                for o in operands:
                    for e in o.exits if o is not v else ():
                        for k in self.sites[e].get("recv_params", ()):
                            self.note_slots(v.ptaint, "meets_local_of", node, k)
        for v in operands:
            if not v.exits:
                continue
            for other in operands:
                if other is v:
                    continue
                # only rank-dependent *data* makes per-rank gradients differ: adding or comparing
                # a rank-derived integer offset does not
                if other.ptaint and not other.exits and not v.ptaint & other.ptaint:
                    # data the caller passed in: in data-parallel code, this rank's batch
                    self.note(v.exits, "meets_input", node, "meets this function's input data")
                reason = f"meets {other.rankdep}" if other.rankdep else ""
                if reason and not (other.exits and other.exits <= v.exits and not other.rankdep):
                    self.note(v.exits - other.exits if other.rankdep.startswith("local") else v.exits, "meets", node, reason)
                    break

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
            node, scope, "exit", api=method, foreign=self.foreign_parameter(node, scope),
            recv_params=sorted({self.slots[s]["index"] for s in recv.ptaint if self.slots[s]["fn"] == scope.symbol}),
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
        # applied at a plan key: the finding belongs at the entry; about a flag: at its argument
        idx = self.add_site(self._plan_elem or node, scope, "style", style=style, flags=flags, plan_key=self._plan_key)
        for flag in flags:
            a = kwarg(node, flag)
            if a is not None:
                self.relate(idx, f"at:{flag}", a)

    def foreign_parameter(self, node: cst.Call, scope: Scope) -> bool:
        """`model.lm_head.weight.to_local()`: a parameter of another module (an attribute two deep,
        from a function argument or from self), materialised outside that module's forward."""
        recv = node.func.value if isinstance(node.func, cst.Attribute) else None
        name = dotted(recv) if recv is not None else None
        if not name or "." not in name:
            return False
        root = name.split(".", 1)[0]
        if root in ("self", "cls"):
            return name.count(".") >= 2  # self.lm_head.weight: a submodule's, not this module's
        v = scope.lookup(root)
        return v is not None and bool(v.ptaint)  # model.lm_head.weight, model an argument

    def in_plan_entry(self) -> bool:
        """Whether the expression being evaluated is the value of a plan dict entry."""
        return self._plan_key is not None and self._plan_elem is not None

    def style_candidate(self, node: cst.Call, scope: Scope, ref: str, name: str, **data: Any) -> int:
        """A call that may instantiate a project ParallelStyle (the index resolves `ref`): placed at
        the plan entry being evaluated, where a finding about it belongs, else at the call."""
        flags = {k: self.literal_bool(a.value) for a in node.args if (k := a.keyword and a.keyword.value) and k.startswith("use_local")}
        return self.add_site(self._plan_elem if self.in_plan_entry() else node, scope, "style_candidate", ref=ref, name=name,
                             plan_key=self._plan_key, flags=flags, **data)

    def apply_styles(self, v: V, entry: cst.CSTNode, scope: Scope) -> None:
        """A style instance made elsewhere (a variable, a helper's result) lands at a plan entry:
        record the application there, where a finding about it belongs."""
        for i in sorted(v.styles):
            origin = self.sites[i]
            if self.site_nodes[i] is entry or origin.get("plan_key") == self._plan_key:
                continue
            origin["applied_elsewhere"] = True
            self.add_site(entry, scope, "style_candidate", **{k: origin[k] for k in ("ref", "name", "flags", "local_class", "via_call") if k in origin},
                          plan_key=self._plan_key)

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
        idx = self.add_site(node, scope, "local_map", grad=grad_state, in_placements=pl, partial=partial)
        a = kwarg(node, "in_grad_placements")
        if a is not None:  # `in_grad_placements=... if c else None`: the finding is about this argument
            self.relate(idx, "at:in_grad_placements", a)

    # -- output -----------------------------------------------------------------------------------------
    def facts(self, positions: str = "none") -> dict[str, Any]:
        """Sites, with positions per `positions`: "none", "sites" (blocks holding a site a rule
        reads directly), "all" (also calls that may apply a project style) or "free": those of
        "sites" that come with the tree (analysis/fast_parse.py); LibCST's tree costs a
        code-generating pass per block, so there the engine asks for them only where needed.
        The facts say "positioned" when every position "sites" gives is there."""
        free = positions == "free"
        needed = {
            b for b, site in zip(self.site_blocks, self.sites)
            if positions == "all" or (positions in ("sites", "free") and site["kind"] != "style_candidate")
        }
        if positions != "none":  # the evidence of function summaries: related locations of callers' findings
            needed |= {place[0] for nodes in self.slot_nodes.values() for k, _, place in nodes if k in CITED}
        # Positions are asked for first, then computed one table (a block, or a method generated
        # on its own) at a time, each table dropped once read: never every node's range of the
        # file at once. A placeholder keeps each value's place (and the dicts' key order).
        asked: dict[Any, list[tuple[cst.CSTNode, Any]]] = {}
        origin: dict[Any, tuple[Any, int, int]] = {}
        missing = []  # (free) positions left out: a block LibCST parsed

        def ask(b: int, unit, node: cst.CSTNode, fill) -> None:
            """fill(range, line offset, column offset) once the table of block b / unit is made."""
            if isinstance(node, Placed):  # positioned when its (lazily parsed) block was done
                if node.range is None and free:
                    missing.append(b)
                    return
                assert node.range is not None, "a position the lazy analysis did not expect to be asked"
                fill(node.range, self.blocks[b][0] - 1, 0)
                return
            ranged = has_ranges(self.blocks[b][1])
            if free and not ranged:
                missing.append(b)
                return
            if unit is not None and not ranged:
                # one method, code-generated on its own: dedented by its class indent, and its
                # leading blank/comment lines come first (a tree from the fast front end has
                # every node's range in the block already: analysis/fast_parse.py)
                fn, line0, indent = unit
                key: Any = ("unit", id(fn))
                origin.setdefault(key, (fn, line0 - len(fn.leading_lines), indent))
            else:
                key = b
                origin.setdefault(key, (None, self.blocks[b][0] - 1, 0))
            asked.setdefault(key, []).append((node, fill))

        def put(target: Any, key: Any, value: list) -> None:
            target[key] = value

        partial = False
        for i, (site, n, b, unit) in enumerate(zip(self.sites, self.site_nodes, self.site_blocks, self.site_units)):
            if b not in needed:
                site["pos"] = None
                partial = True
                continue
            site["pos"] = None
            ask(b, unit, n, lambda r, dl, dc, site=site: put(site, "pos", [r[0] + dl, r[1] + 1 + dc, r[2] + dl, r[3] + 1 + dc]))
            for key, rn, (rb, runit) in self.related_nodes.get(i, ()):
                # evidence positioned in its own block/unit (it may sit in another method)
                if key.startswith("at:"):  # the exact start of a part the finding is about
                    at = site.setdefault("at", {})
                    at[key[3:]] = None
                    ask(rb, runit, rn, lambda r, dl, dc, at=at, k=key[3:]: put(at, k, [r[0] + dl, r[1] + 1 + dc]))
                else:
                    lines = site.setdefault(f"{key}_lines", [])
                    lines.append(0)
                    ask(rb, runit, rn, lambda r, dl, dc, lines=lines, j=len(lines) - 1: put(lines, j, r[0] + dl))
        classes = [
            {"name": c.name, "qualname": c.qualname, "bases": c.bases, "torch_style": c.is_torch_style, "bare_exits": c.bare_exits}
            for c in self.classes
        ]
        def position(b: int, unit, node: cst.CSTNode) -> Any:
            if b not in needed:
                return 0  # not cited by any finding (only CITED evidence is positioned)
            holder = [0]  # replaced by its line below
            ask(b, unit, node, lambda r, dl, dc, h=holder: put(h, 0, r[0] + dl))
            return holder

        functions = self.summaries(position if positions != "none" else None)
        for key, requests in asked.items():
            fn, dl, dc = origin[key]
            ranges = table(cst.Module(body=[fn]) if fn is not None else self.blocks[key][1])
            for node, fill in requests:
                fill(ranges[node], dl, dc)
            del ranges
        if positions != "none":
            for info in functions.values():
                for slot in info.get("slots", {}).values():
                    for key, found in slot.get("lines", {}).items():
                        slot["lines"][key] = [h[0] if type(h) is list else h for h in found]
        return {"sites": self.sites, "classes": classes, "functions": functions, "unpositioned": partial,
                "positioned": positions in ("sites", "all") or (free and not missing)}
