"""The abstract values of the analyzer: one lattice element per local name (kind, placements, the
exit sites a value derives from, rank and rank-dependence taints), `join` for branches and
`combine` for operations."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

ANY = "?"  # placement letter for "unknown"


def is_torch_name(q: str) -> bool:
    """torch itself: `torch` or `torch.*` (not torchtitan, torchao, torchvision...)."""
    return in_package(q, "torch")


def in_package(q: str, package: str) -> bool:
    """`q` names `package` or something inside it (a dotted prefix, never a name prefix)."""
    return q == package or q.startswith(package + ".")



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
    # parameters of the function being analysed that this value derives from (ids of the
    # analyzer's parameter slots): what the function does to them is its summary for callers
    ptaint: frozenset = frozenset()
    styles: frozenset = frozenset()  # style_candidate sites this value is an instance of
    classes: frozenset = frozenset()  # refs of project classes this value may be (a registry's values)

    def field(self, name: str) -> "V | None":
        for k, v in self.fields:
            if k == name:
                return v
        return None


#: the most exit sites one value remembers. In straight-line code (`y2 = y1 @ w.to_local() + ...`,
#: thousands of lines) every value would otherwise hold every exit before it: memory and time
#: quadratic in the function's length (a 100k-line function: gigabytes). Past the cap a value keeps
#: its newest exits (those nearest the code that uses it); the older ones stay sites, and this
#: value alone no longer reports its uses to them
MAX_EXITS = 64


def capped(exits: frozenset) -> frozenset:
    return exits if len(exits) <= MAX_EXITS else frozenset(sorted(exits)[-MAX_EXITS:])


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
        exits=capped(a.exits | b.exits),
        ptaint=a.ptaint | b.ptaint,
        styles=a.styles | b.styles,
        classes=a.classes | b.classes,
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
    ptaint: frozenset = frozenset()
    rank = rankdep = ""
    tensors = []
    for v in vals:
        exits |= v.exits
        ptaint |= v.ptaint
        rank = rank or v.rank
        rankdep = rankdep or v.rankdep
        if v.kind in ("tensor", "dtensor", "inttensor") or v.exits:
            tensors.append(v)
    # no gradient comes out only if none goes in; a collective's output stays synced through views
    nograd = bool(tensors) and all(v.nograd for v in tensors)
    synced = bool(tensors) and all(v.synced for v in tensors)
    return V(kind=kind, exits=capped(exits), rank=rank, rankdep=rankdep, nograd=nograd, synced=synced, ptaint=ptaint)


def placements_of(v: V | None) -> frozenset:
    if v is None:
        return frozenset()
    if v.kind in ("placements", "placement"):
        return v.pl
    return frozenset()
