"""Where a wrong gradient first appears (`confirm --reference`). Pure Python: no torch.

Input: every rank's GradProbe records (sketches of the gradients reaching each module call's
inputs and outputs, see gradprobe.py) and the one-rank reference run's records. A sketch is
linear in the gradient and places every element by its position in the global tensor, so the
full gradient's sketch is rebuilt from the ranks' sketches the way the tensor is rebuilt from its
shards: a DTensor gradient sums the ranks at coordinate 0 of every Replicate mesh dim (Shard and
Partial dims add up); a plain tensor is either replicated (every rank must agree with the
reference) or a partial sum (the ranks add up to it), and whichever fits is taken.

Backward runs from outputs to inputs, so the module where the gradient goes wrong is one whose
output gradient matches the reference while an input's (or one of its own parameters') does not;
the innermost such module is reported, with the DTensor entries and exits inside it and, where the
difference is a multiple of one inner path's reference gradient, that multiple ("input gradient of
`layer` = reference + 1.0x the `layer.router` path": a branch counted twice on 2 ranks).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

TINY = 1e-30
#: a difference explained by one path when the rest is this small, relative to the difference
EXPLAINED = 0.05


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _sub(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def _add(vs: Iterable[list[float]]) -> list[float]:
    out: list[float] | None = None
    for v in vs:
        out = list(v) if out is None else [x + y for x, y in zip(out, v)]
    return out or []


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _rel(a: list[float], ref: list[float]) -> float:
    return _norm(_sub(a, ref)) / max(_norm(ref), TINY)


def _key(rec: dict) -> tuple:
    return rec["module"], rec["call"], rec["slot"]


def rebuild(per_rank: dict[int, dict]) -> list[tuple[str, list[list[float]]]]:
    """Hypotheses for the full gradient's sketch: [(name, [sketch, ...])]; a hypothesis holds
    when every sketch in its list matches the reference."""
    recs = list(per_rank.values())
    if all(r.get("kinds") for r in recs):
        kinds = recs[0]["kinds"]
        chosen = [r["sketch"] for r in recs
                  if all(c == 0 for c, k in zip(r.get("coord") or [], kinds) if k == "R")]
        return [("dtensor", [_add(chosen)])]
    return [("replicated", [r["sketch"] for r in recs]), ("partial", [_add(r["sketch"] for r in recs)])]


def compare(payloads: list[dict], reference: list[dict], tol: float) -> dict[tuple, dict]:
    """(module, call, slot) -> {"agrees", "rel", "diff", "shape"} for every slot the reference has."""
    ref = {_key(r): r for r in reference if r.get("sketch")}
    by_key: dict[tuple, dict[int, dict]] = {}
    for p in payloads:
        for rec in p.get("probe") or ():
            if rec.get("sketch"):
                by_key.setdefault(_key(rec), {})[p["rank"]] = rec
    out: dict[tuple, dict] = {}
    world = len(payloads)
    for key, per_rank in by_key.items():
        r = ref.get(key)
        if r is None or len(per_rank) < world or any(x.get("shape") != r.get("shape") for x in per_rank.values()):
            continue  # not comparable: another call structure or shape than the one-rank run
        best = None
        for name, sketches in rebuild(per_rank):
            rel = max(_rel(s, r["sketch"]) for s in sketches)
            if best is None or rel < best[0]:
                best = (rel, name, _sub(sketches[0], r["sketch"]))
        rel, name, diff = best
        out[key] = {"agrees": rel <= tol, "rel": rel, "as": name, "diff": diff, "shape": r.get("shape")}
    return out


def _inside(name: str, module: str) -> bool:
    return module == "" or name == module or name.startswith(module + ".")


def _explain(diff: list[float], own_ref: list[float], paths: list[tuple[str, list[float]]]) -> str:
    """The difference as a multiple of one inner path's reference gradient, or of the whole."""
    dn = _norm(diff)
    best = None
    for path, ref in paths:
        rr = _dot(ref, ref)
        if rr <= TINY:
            continue
        f = _dot(diff, ref) / rr
        rest = _norm([d - f * x for d, x in zip(diff, ref)]) / max(dn, TINY)
        if rest <= EXPLAINED and (best is None or rest < best[0]):
            best = (rest, f, path)
    if best is not None:
        return f"reference + {best[1]:.3g}x the `{best[2]}` path"
    rr = _dot(own_ref, own_ref)
    if rr > TINY:
        f = _dot(diff, own_ref) / rr
        if _norm([d - f * x for d, x in zip(diff, own_ref)]) <= EXPLAINED * max(dn, TINY):
            return f"{1 + f:.3g}x the reference"
    return f"differs from the reference (rel {dn / max(_norm(own_ref), TINY):.3g})"


def _label(module: str) -> str:
    return f"`{module}`" if module else "the model (root module)"


def localize(payloads: list[dict], reference: list[dict], tol: float, sites: list[dict],
             params: list[dict]) -> list[dict]:
    """The innermost modules where a gradient goes wrong (see the module docstring)."""
    cmp = compare(payloads, reference, tol)
    ref = {_key(r): r["sketch"] for r in reference if r.get("sketch")}
    # a parameter whose gradient differs across its replicas is DTP901 already: its mismatch with
    # the reference follows from that, and says nothing about where the wrong gradient appears
    bad_params = [p for p in params if p.get("matches_reference") is False and p.get("status") != "diverging"]
    calls = sorted({(m, c) for m, c, _s in cmp})
    candidates: list[dict] = []
    for module, call in calls:
        slots = {s: v for (m, c, s), v in cmp.items() if m == module and c == call}
        outs = [v for s, v in slots.items() if s.startswith("out")]
        if not outs or not all(v["agrees"] for v in outs):
            continue
        wrong_in = {s: v for s, v in slots.items() if s.startswith("in") and not v["agrees"]}
        own = [p["name"] for p in bad_params if p["name"].rpartition(".")[0] == module] if call == 0 else []
        if not wrong_in and not own:
            continue
        parts = []
        for s, v in sorted(wrong_in.items()):
            inner = sorted({(m, rs) for (m, c, rs) in ref if m != module and _inside(m, module) and rs.startswith("in")
                            and cmp.get((m, c, rs), {}).get("shape") == v["shape"]})
            paths = [(m, ref[(m, c, rs)]) for (m, c, rs) in ref if (m, rs) in inner]
            parts.append(f"input {s[2:]} gradient = {_explain(v['diff'], ref[(module, call, s)], paths)}")
        for name in own:
            p = next(x for x in bad_params if x["name"] == name)
            scales = list((p.get("reference_scale") or {}).values())
            how = f"{scales[0][0]:.3g}x the reference" if scales and scales[0][1] > 0.99 else "differs from the reference"
            parts.append(f"parameter `{name}` gradient = {how}")
        inside = [s for s in sites if s.get("api") in ("to_local", "full_tensor", "from_local")
                  and _inside(s.get("module") or "", module)]
        candidates.append({
            "module": module, "call": call, "explanation": "; ".join(parts),
            "wrong_inputs": sorted(wrong_in), "wrong_params": own,
            "sites": [{"api": s["api"], "path": s["path"], "line": s["line"], "module": s.get("module") or "",
                       "hook": s.get("hook") or "", "verdict": s.get("verdict"),
                       "declared": (s.get("evidence") or {}).get("declared_grad_placements")} for s in inside],
        })
    names = {c["module"] for c in candidates}
    innermost = [c for c in candidates if not any(n != c["module"] and _inside(n, c["module"]) for n in names)]
    for c in innermost:
        c["summary"] = (f"the gradient goes wrong inside {_label(c['module'])}: its output gradient matches the "
                        f"one-rank reference, but {c['explanation']}")
    return innermost


def site_list(loc: dict[str, Any], limit: int = 4) -> str:
    """`to_local` at a.py:64 (post hook of `router`), ... for a message."""
    out = []
    for s in loc.get("sites", [])[:limit]:
        where = f" ({s['hook']} hook of `{s['module']}`)" if s.get("hook") in ("pre", "post") else ""
        out.append(f"`{s['api']}` at {s['path']}:{s['line']}{where}")
    more = len(loc.get("sites", [])) - limit
    return ", ".join(out) + (f" and {more} more" if more > 0 else "")
