"""Turn the gathered per-rank payloads into verdicts. Pure Python: no torch, testable alone.

The question for a site and a mesh dim d: the gradient that reached the local tensor carries a
label (the declared or default grad placement). If the label on d is Replicate, every rank of a
d-group (ranks that agree on every other mesh coordinate) must have received the same gradient;
if it is Partial, the ranks hold addends that DTensor will sum, so identical non-zero addends mean
the sum over-counts by the group size. Shard labels describe different data per rank and cannot
be judged without a reference run.
"""

from __future__ import annotations

import math
from typing import Any

from placement_lint.runtime.site_ids import split_site_id

N_HEAD = 5  # norm, l1, sum, absmax, hash (see fingerprints.FP_HEAD)

# Ranks that computed the same gradient produce bit-identical fingerprints; the tolerance only has
# to absorb reductions that ran in a different order (NCCL/gloo all-reduce trees), which is
# bounded by the dtype's resolution, and must stay far below the O(1) differences of a real bug.
RTOL = {"bfloat16": 1e-2, "float16": 1e-2, "float32": 1e-5, "float64": 1e-10}
DEFAULT_RTOL = 1e-5
TINY = 1e-30

# --reference compares a sharded run with a one-rank run: they differ by summation order, and by
# rounding wherever the model computes in low precision (bf16 grouped matmuls under fp32
# parameters). The bound follows the lowest precision the model computed in; a dropped or doubled
# reduction moves a gradient by 1 - 1/k >= 0.5 (k ranks) or by 1.0, far above every entry.
REF_RTOL = {"float64": 1e-3, "float32": 1e-3, "float16": 0.05, "bfloat16": 0.1,
            "float8_e4m3fn": 0.25, "float8_e5m2": 0.25}
_PRECISION_ORDER = ("float8_e5m2", "float8_e4m3fn", "bfloat16", "float16", "float32", "float64")

SEVERITY = {"confirmed": 5, "mixed": 4, "double-count": 3, "inconclusive": 2, "refuted": 1, "not-reached": 0}


def rtol_for(dtype: str) -> float:
    return RTOL.get(dtype, DEFAULT_RTOL)


def compute_dtype(param_dtype: str, low_precision: list[str] | None) -> str:
    """The lowest precision among the parameter's dtype and what the model computed in."""
    cands = [d for d in [param_dtype, *(low_precision or [])] if d in _PRECISION_ORDER]
    return min(cands, key=_PRECISION_ORDER.index) if cands else (param_dtype or "float32")


def ref_rtol(dtype: str) -> float:
    return REF_RTOL.get(dtype, REF_RTOL["float32"])


def rel_diff(a: list[float], b: list[float]) -> float:
    """Largest relative difference between two fingerprints (0.0 for identical gradients)."""
    norm = abs(a[0] - b[0]) / max(abs(a[0]), abs(b[0]), TINY)
    l1s = max(abs(a[1]), abs(b[1]), TINY)
    hsh = abs(a[4] - b[4]) / l1s
    tot = abs(a[2] - b[2]) / l1s
    scale = max(abs(a[3]), abs(b[3]), TINY)
    samp = max((abs(x - y) for x, y in zip(a[N_HEAD:], b[N_HEAD:])), default=0.0) / scale
    return max(norm, hsh, tot, samp)


def is_zero(fp: list[float]) -> bool:
    return fp[3] <= TINY


def sample_pattern(fps: list[list[float]], tol: float) -> tuple[int, int]:
    """(positions identical and non-zero on every rank, positions that differ) among the samples.

    A gradient with both kinds of positions came from consumers of two kinds: a rank-dependent
    one (the differing part) and a replicated one (the identical part) — the 'mixed' case, where
    neither Replicate nor Partial is a correct label for the whole tensor.
    """
    scale = max(max(abs(fp[3]) for fp in fps), TINY)
    same_nz = diff = 0
    for j in range(N_HEAD, len(fps[0])):
        v0 = fps[0][j]
        if any(abs(fp[j] - v0) > tol * scale for fp in fps[1:]):
            diff += 1
        elif abs(v0) > tol * scale:
            same_nz += 1
    return same_nz, diff


def _groups(payload_sites: dict[int, dict], dim: int) -> list[list[int]]:
    """Ranks that differ only in mesh coordinate `dim` (from each rank's own coordinate)."""
    by_key: dict[tuple, list[int]] = {}
    for rank, site in payload_sites.items():
        coord = (site.get("mesh") or {}).get("coord")
        if coord is None:
            continue
        key = tuple(c for i, c in enumerate(coord) if i != dim)
        by_key.setdefault(key, []).append(rank)
    return [sorted(v) for v in by_key.values()]


def _dim_name(mesh: dict | None, dim: int) -> str:
    names = (mesh or {}).get("dim_names")
    if names and dim < len(names) and names[dim]:
        return str(names[dim])
    return str(dim)


def _judge(label: str, fps: list[list[float]], tol: float, api: str) -> tuple[str, float, str]:
    """Verdict for one group of ranks on one call and one mesh dim: (verdict, max_rel, note)."""
    base = fps[0]
    worst = max(rel_diff(base, fp) for fp in fps[1:])
    differ = worst > tol
    if all(is_zero(fp) for fp in fps):
        return "refuted", 0.0, "zero gradient on every rank"
    same_nz, ndiff = sample_pattern(fps, tol)
    mixed = differ and same_nz >= 2 and ndiff >= 2
    if label == "R":
        if not differ:
            return "refuted", worst, "gradients agree across the group"
        if mixed:
            return "mixed", worst, ("part of the gradient is identical on every rank and part differs: the "
                                    "local tensor feeds both replicated and rank-dependent consumers")
        return "confirmed", worst, "gradient differs across ranks although its label says Replicate"
    if label == "P":
        if not differ:
            return "double-count", worst, ("every rank holds the same non-zero gradient but it is labelled "
                                           "Partial: the reduction sums it group-size times")
        if mixed:
            return "mixed", worst, ("part of the gradient is identical on every rank (over-counted by the "
                                    "Partial label) and part differs")
        return "refuted", worst, "per-rank partial gradients, summed by the Partial label"
    return "inconclusive", worst, "Shard-labelled gradient: needs a reference run"


def judge_site(per_rank: dict[int, dict], world_size: int, torch_version: str,
               roots: dict[str, dict] | None = None) -> dict:
    """Verdict and evidence for one site, given that site's record from every rank that ran it."""
    any_site = next(iter(per_rank.values()))
    api = any_site["api"]
    mesh = any_site.get("mesh")
    ncalls = [len(s["records"]) for s in per_rank.values()]
    evidence: dict[str, Any] = {
        "api": api,
        "call_count": max(s["calls"] for s in per_rank.values()),
        "module": any_site.get("module") or "",
        "hook": any_site.get("hook") or "",
        "torch_frame": any_site.get("torch_frame") or "",
        "forward_placements": any_site.get("forward"),
        "declared_grad_placements": any_site.get("declared"),
        "torch_version": torch_version,
        "ranks_reached": sorted(per_rank),
    }
    if any_site.get("root"):
        evidence["derived_from"] = any_site["root"]
    if len(per_rank) < world_size:
        evidence["note_ranks"] = f"only ranks {sorted(per_rank)} executed this site"

    got_grad = any(rec.get("fp") is not None for s in per_rank.values() for rec in s["records"])
    wants_grad = any(rec.get("grad") for s in per_rank.values() for rec in s["records"])
    if not got_grad:
        evidence["reason"] = ("no gradient flows through this call (grad disabled or nothing "
                              "differentiable downstream)" if not wants_grad else
                              "the local tensor never received a gradient (unused by the loss)")
        return {"verdict": "refuted", "evidence": evidence}

    best: tuple | None = None  # (severity, verdict, rel, dim, call, ranks, note)
    comparable = False
    calls_bad = 0
    ncommon = min(ncalls)
    for call in range(ncommon):
        call_verdicts = []
        recs = {r: s["records"][call] for r, s in per_rank.items()}
        fps = {r: rec.get("fp") for r, rec in recs.items() if rec.get("fp") is not None}
        dtype = next((rec.get("dtype") for rec in recs.values() if rec.get("dtype")), any_site.get("dtype", ""))
        tol = rtol_for(dtype or "")
        if api == "slice" and not any_site.get("root"):
            # untracked slice at a static finding: ranks whose forward values agree are replicas
            groups: dict[tuple, list[int]] = {}
            for r, rec in recs.items():
                fwd = rec.get("fwd")
                if fwd is None or r not in fps:
                    continue
                key = tuple(round(v, 6) for v in fwd[:N_HEAD])
                groups.setdefault(key, []).append(r)
            for ranks in groups.values():
                if len(ranks) < 2:
                    continue
                comparable = True
                v, rel, note = _judge("R", [fps[r] for r in sorted(ranks)], tol, api)
                call_verdicts.append((SEVERITY[v], v, rel, None, call, sorted(ranks), note))
        else:
            ndim = len((mesh or {}).get("shape") or [])
            for dim in range(ndim):
                if api == "from_local":
                    gp = next((rec.get("grad_placements") for rec in recs.values() if rec.get("grad_placements")), None)
                    label = gp[dim] if gp else None
                else:
                    eff = any_site.get("effective") or []
                    label = eff[dim] if dim < len(eff) else None
                if label not in ("R", "P"):
                    continue
                for ranks in _groups({r: per_rank[r] for r in fps}, dim):
                    if len(ranks) < 2:
                        continue
                    comparable = True
                    v, rel, note = _judge(label, [fps[r] for r in ranks], tol, api)
                    if api == "slice" and v == "double-count":
                        v, note = "refuted", "the slice is re-summed by its source's Partial label"
                    call_verdicts.append((SEVERITY[v], v, rel, dim, call, ranks, note))
        if call_verdicts:
            worst = max(call_verdicts, key=lambda t: (t[0], t[2]))
            if worst[1] in ("confirmed", "mixed", "double-count"):
                calls_bad += 1
            if best is None or (worst[0], worst[2]) > (best[0], best[2]):
                best = worst
    again = _reduced_again(per_rank, any_site, ncommon) if api == "from_local" else None
    if again is not None and (best is None or again[0] > best[0]):
        best, comparable = again, True
        evidence["reduced_again_by"] = any_site.get("root")
    if not comparable or best is None:
        evidence["reason"] = ("every gradient label on this site is Shard (or the mesh dim has one rank): "
                              "rerun with --reference to judge it")
        return {"verdict": "inconclusive", "evidence": evidence}
    _, verdict, rel, dim, call, ranks, note = best
    fp_by_rank = {r: per_rank[r]["records"][call].get("fp") for r in ranks}
    evidence.update({
        "mesh_dim": _dim_name(mesh, dim) if dim is not None else "world (forward replicas)",
        "mesh_dim_index": dim,
        "group_ranks": ranks,
        "per_rank_grad_norms": {str(r): _round(fp[0]) for r, fp in fp_by_rank.items() if fp},
        "max_rel_diff": _round(rel),
        "tolerance": rtol_for(per_rank[ranks[0]]["records"][call].get("dtype") or ""),
        "dtype": per_rank[ranks[0]]["records"][call].get("dtype") or any_site.get("dtype", ""),
        "worst_call": call,
        "calls_flagged": calls_bad,
        "calls_compared": ncommon,
        "effective_grad_placements": any_site.get("effective"),
        "detail": note,
    })
    if "reduced_again_by" in evidence:
        evidence["branch_grad_norms"] = {str(r): _round(per_rank[r]["records"][call]["in_fp"][0]) for r in ranks}
    if len(set(ncalls)) > 1:
        evidence["note_calls"] = f"ranks executed this site a different number of times: {ncalls}"
    # the keys a one-line text report shows first: what differs, where, by how much
    first = ("mesh_dim", "max_rel_diff", "per_rank_grad_norms", "module", "hook", "call_count", "dtype")
    ordered = {k: evidence[k] for k in first if k in evidence}
    ordered.update((k, v) for k, v in evidence.items() if k not in ordered)
    return {"verdict": verdict, "evidence": ordered}


def _reduced_again(per_rank: dict[int, dict], any_site: dict, ncalls: int) -> tuple | None:
    """A from_local whose input came out of an exit labelled Partial on mesh dim d, while the
    from_local declares the tensor Replicate on d: in backward, from_local redistributes the
    gradient it receives to Replicate (an all-reduce of a Partial one), so this branch's share of
    the local tensor's gradient arrives complete on every rank; the exit's Partial label then
    sums it again. Seen when the share (`in_fp`) is identical and non-zero across a d-group.
    Returns a call verdict tuple (severity, verdict, rel, dim, call, ranks, note) or None."""
    root_eff = any_site.get("root_effective") or []
    fwd = any_site.get("forward") or []
    found = None
    for dim, kind in enumerate(root_eff):
        if kind != "P" or dim >= len(fwd) or not str(fwd[dim]).startswith("Replicate"):
            continue
        for call in range(ncalls):
            fps = {r: s["records"][call].get("in_fp") for r, s in per_rank.items()}
            fps = {r: fp for r, fp in fps.items() if fp is not None}
            dtype = next((s["records"][call].get("dtype") for s in per_rank.values() if s["records"][call].get("dtype")), "")
            tol = rtol_for(dtype or any_site.get("dtype") or "")
            for ranks in _groups({r: per_rank[r] for r in fps}, dim):
                if len(ranks) < 2 or all(is_zero(fps[r]) for r in ranks):
                    continue
                rel = max(rel_diff(fps[ranks[0]], fps[r]) for r in ranks[1:])
                if rel <= tol and found is None:
                    _api, rpath, rline, *_ = split_site_id(str(any_site.get("root") or ""))
                    where = f"{rpath}:{rline}" if rline else "its source"
                    found = (SEVERITY["double-count"], "double-count", rel, dim, call, ranks,
                             f"this from_local (Replicate) all-reduced its branch's gradient in backward, and "
                             f"the exit at {where} labels the same local tensor's gradient Partial: the "
                             f"branch is summed again, {len(ranks)}x")
    return found


def judge_params(payloads: list[dict], reference_rtol: float | None = None,
                 low_precision: list[str] | None = None) -> list[dict]:
    """DTP901 candidates: replicated DTensor parameters whose gradients differ across ranks; with
    a reference, whether each parameter's gradient matches the one-rank run's (within the
    tolerance of the lowest precision the model computed in, or `reference_rtol`)."""
    out = []
    names = list(payloads[0].get("params", {}))
    for name in names:
        per_rank = {p["rank"]: p["params"][name] for p in payloads if name in p.get("params", {})}
        first = next(iter(per_rank.values()))
        entry = {
            "name": name,
            "placements": first.get("placement_strs"),
            "dtype": first.get("dtype"),
            "status": "agree",
            "per_rank_grad_norms": {str(r): _round(e["fp"][0]) for r, e in per_rank.items() if e.get("fp")},
        }
        refs = {str(r): e["ref"]["rel_diff"] for r, e in per_rank.items() if e.get("ref") is not None}
        if refs:
            entry["reference_rel_diff"] = {k: _round(v) for k, v in refs.items()}
            cdt = compute_dtype(first.get("dtype") or "", low_precision)
            tol = ref_rtol(cdt) if reference_rtol is None else reference_rtol
            entry["compute_dtype"] = cdt
            entry["reference_tolerance"] = tol
            if reference_rtol is not None:
                entry["tolerance_source"] = "--reference-rtol"
            entry["matches_reference"] = all(v is not None and v <= tol for v in refs.values())
            scales = {str(r): e["ref"]["scale"] for r, e in per_rank.items() if (e.get("ref") or {}).get("scale")}
            if scales:
                entry["reference_scale"] = {k: [_round(v[0]), _round(v[1])] for k, v in scales.items()}
        if not all(e.get("fp") for e in per_rank.values()):
            entry["status"] = "no-grad"
            out.append(entry)
            continue
        tol = rtol_for(first.get("dtype") or "")
        worst = (0.0, None, None)
        if not first.get("dtensor", True):
            # plain parameter: compare among ranks holding identical values (its replicas)
            groups: dict[tuple, list[int]] = {}
            for r, e in per_rank.items():
                key = tuple(round(v, 7) for v in (e.get("value") or [])[:N_HEAD])
                groups.setdefault(key, []).append(r)
            for ranks in groups.values():
                if len(ranks) < 2:
                    continue
                rel = max(rel_diff(per_rank[ranks[0]]["fp"], per_rank[r]["fp"]) for r in ranks[1:])
                if rel > worst[0]:
                    worst = (rel, -1, sorted(ranks))
            entry["placements"] = ["plain tensor"]
            if len(groups) != 1 and "matches_reference" in entry:
                # per-rank parameters (local experts): a one-rank run has other shapes/values
                entry.pop("matches_reference")
                entry.pop("reference_rel_diff", None)
        for dim, kind in enumerate(first.get("placements") or [] if first.get("dtensor", True) else []):
            gk = (first.get("grad_placements") or [])[dim:dim + 1]
            if kind != "R" or (gk and gk[0] != "R"):
                continue
            for ranks in _groups(per_rank, dim):
                if len(ranks) < 2:
                    continue
                rel = max(rel_diff(per_rank[ranks[0]]["fp"], per_rank[r]["fp"]) for r in ranks[1:])
                if rel > worst[0]:
                    worst = (rel, dim, ranks)
        if worst[1] is not None and worst[0] > tol:
            entry["status"] = "diverging"
            entry["mesh_dim"] = (_dim_name(first.get("mesh"), worst[1]) if worst[1] >= 0
                                 else "world (ranks holding identical values)")
            entry["group_ranks"] = worst[2]
            entry["max_rel_diff"] = _round(worst[0])
        out.append(entry)
    return out


def compute(payloads: list[dict], reference_rtol: float | None = None, reference_probe: list[dict] | None = None) -> dict:
    """All verdicts of one harness run, from every rank's payload (in rank order).
    reference_rtol: `--reference-rtol`, replacing the tolerance picked from the compute dtype.
    reference_probe: the one-rank reference run's GradProbe records: localize wrong gradients."""
    payloads = sorted(payloads, key=lambda p: p["rank"])
    world = len(payloads)
    torch_version = payloads[0].get("torch", "")
    by_site: dict[str, dict[int, dict]] = {}
    order: list[str] = []
    for p in payloads:
        for s in p["sites"]:
            if s["id"] not in by_site:
                by_site[s["id"]] = {}
                order.append(s["id"])
            by_site[s["id"]][p["rank"]] = s
    sites = []
    for sid in order:
        per_rank = by_site[sid]
        any_site = next(iter(per_rank.values()))
        res = judge_site(per_rank, world, torch_version)
        sites.append({
            "id": sid,
            "api": any_site["api"],
            "path": any_site["path"],
            "line": any_site["line"],
            "function": any_site.get("function", ""),
            "module": any_site.get("module", ""),
            "hook": any_site.get("hook", ""),
            "root": any_site.get("root"),
            "local_map": any_site.get("local_map", ""),
            "params": any_site.get("params") or [],
            **res,
        })
    low_precision = sorted({d for p in payloads for d in (p.get("low_precision") or [])})
    params = judge_params(payloads, reference_rtol, low_precision)
    warnings: list[str] = []
    same = identical_shards(payloads)
    if same:
        for dim, (dim_name, names) in sorted(same.items()):
            warnings.append(
                f"{len(names)} Shard-placed parameter(s) hold the same values on every rank of mesh dim "
                f"`{dim_name}` (e.g. `{names[0]}`): the harness did not give each rank its own shard "
                "(DTensor random init is not offset-tracked on CPU meshes; initialise from one global "
                "tensor and distribute it). Verdicts that rest on ranks agreeing on that dim are "
                "inconclusive.")
        _downgrade_identical(sites, same)
        if any("matches_reference" in p for p in params):
            # the parallel model did not get its shards of one global init, so it is not the
            # model the one-rank reference built: every comparison with it would be noise
            warnings.append("--reference comparisons skipped: with identical shards the parallel model "
                            "is not the model the one-rank reference run built")
            for p in params:
                if p.pop("matches_reference", None) is not None:
                    p["reference_skipped"] = "identical shards"
    _tie_to_reference(sites, params, {sid: next(iter(by_site[sid].values())).get("mesh") for sid in order})
    out = {
        "world_size": world,
        "torch": torch_version,
        "sites": sites,
        "params": params,
        "forced_calls": sum(p.get("forced_calls", 0) for p in payloads),
        "low_precision": low_precision,
    }
    if reference_probe and any(p.get("probe") for p in payloads) and not any(
            p.get("reference_skipped") for p in params):
        from placement_lint.runtime.localize import localize

        tol = reference_rtol if reference_rtol is not None else ref_rtol(compute_dtype("float32", low_precision))
        out["localization"] = localize(payloads, reference_probe, tol, sites, params)
    if warnings:
        out["warnings"] = warnings
    return out


def _is_constant(fp: list[float]) -> bool:
    """All |values| equal (zeros, ones, a constant fill): norm^2 == l1 * absmax only then."""
    norm, l1, absmax = fp[0], fp[1], fp[3]
    if absmax <= TINY:
        return True
    return abs(norm * norm - l1 * absmax) <= 1e-6 * l1 * absmax


def identical_shards(payloads: list[dict]) -> dict[int, tuple[str, list[str]]]:
    """{mesh dim: (its name, parameters whose Shard on that dim is the same tensor on every rank
    of a group)}; constant tensors (a ones-initialised norm weight) are expected to match."""
    out: dict[int, tuple[str, list[str]]] = {}
    names = list(payloads[0].get("params", {}))
    for name in names:
        per_rank = {p["rank"]: p["params"][name] for p in payloads
                    if name in p.get("params", {}) and p["params"][name].get("value")}
        if len(per_rank) < 2:
            continue
        first = next(iter(per_rank.values()))
        for dim, kind in enumerate(first.get("placements") or []):
            if kind != "S":
                continue
            for ranks in _groups(per_rank, dim):
                if len(ranks) < 2:
                    continue
                vals = [per_rank[r]["value"] for r in ranks]
                if _is_constant(vals[0]):
                    continue
                if all(rel_diff(vals[0], v) <= 1e-12 for v in vals[1:]):
                    entry = out.setdefault(dim, (_dim_name(first.get("mesh"), dim), []))
                    if name not in entry[1]:
                        entry[1].append(name)
    return out


def _downgrade_identical(sites: list[dict], same: dict[int, tuple[str, list[str]]]) -> None:
    for s in sites:
        ev = s["evidence"]
        dim = ev.get("mesh_dim_index")
        if dim not in same or s["verdict"] not in ("double-count", "refuted") or "max_rel_diff" not in ev:
            continue
        dim_name, names = same[dim]
        ev["downgraded_from"] = s["verdict"]
        ev["reason"] = (f"ranks of mesh dim `{dim_name}` hold identical shards of {len(names)} parameter(s) "
                        f"(e.g. `{names[0]}`), so gradients that depend on the rank's shard coincide: "
                        "their agreement proves nothing here")
        s["verdict"] = "inconclusive"


def _tie_to_reference(sites: list[dict], params: list[dict], meshes: dict[str, dict | None]) -> None:
    """Settle, with the reference, the verdicts of sites that converted a parameter.

    A `refuted` site (the ranks agree) is the cause when the reference says the parameter's
    gradient is 1/k of the truth on every rank, k the size of a mesh dim the site labelled
    Replicate: each rank computed its 1/k share and the label skipped the sum. A `double-count`
    site is not one when the parameter's gradient matches the reference: each rank's forward
    took 1/k of the parameter, so summing the identical addends is right. Without a reference,
    such sites get a `reference_hint`."""
    pmap = {p["name"]: p for p in params}
    for s in sites:
        if s["verdict"] == "double-count" and s.get("params"):
            # identical Partial addends are a double count unless each rank's forward already
            # took 1/k of the parameter (a bias split over a row-parallel matmul): the reference
            # tells the two apart
            tied = [pmap.get(n) or {} for n in s["params"]]
            if tied and all(p.get("matches_reference") is True for p in tied):
                s["evidence"]["downgraded_from"] = "double-count"
                s["evidence"]["detail"] = (
                    f"every rank holds the same Partial addend, but the gradient of "
                    f"{', '.join('`%s`' % n for n in s['params'])} matches the one-rank reference: each "
                    "rank's forward used 1/k of the parameter, so summing the addends is right")
                s["verdict"] = "refuted"
            elif not any("matches_reference" in p for p in tied):
                s["evidence"]["reference_hint"] = (
                    "this site converts a parameter: if the forward scales it by 1/k on every rank, "
                    "identical addends are correct; --reference decides")
            continue
        if s["verdict"] != "refuted" or not s.get("params"):
            continue
        ev = s["evidence"]
        if not any("matches_reference" in (pmap.get(n) or {}) for n in s["params"]):
            if "R" in (ev.get("effective_grad_placements") or []) and "max_rel_diff" in ev:
                ev["reference_hint"] = ("the ranks agree, which cannot show a gradient off by the same "
                                        "factor on every rank (a parameter scaled by 1/k in forward); "
                                        "--reference can")
            continue
        eff = ev.get("effective_grad_placements") or []
        mesh = meshes.get(s["id"]) or {}
        shape = mesh.get("shape") or []
        for name in s["params"]:
            p = pmap.get(name) or {}
            scales = p.get("reference_scale") or {}
            if p.get("matches_reference") is not False or p.get("status") != "agree" or not scales:
                continue
            dim = next((d for d, kind in enumerate(eff)
                        if kind == "R" and d < len(shape) and shape[d] > 1
                        and all(v[1] > 0.99 and abs(v[0] * shape[d] - 1.0) < 0.05 for v in scales.values())),
                       None)
            if dim is None:
                continue
            k, scale = shape[dim], next(iter(scales.values()))[0]
            s["verdict"] = "confirmed"
            ev.update({
                "mesh_dim": _dim_name(mesh, dim),
                "mesh_dim_index": dim,
                "parameter": name,
                "reference_scale": {r: v[0] for r, v in scales.items()},
                "detail": (f"every rank holds the same gradient for `{name}`, {scale:.3g}x the one-rank "
                           f"reference's (1/{k}): each rank computed its 1/{k} share and the Replicate "
                           "label skipped the sum; label it Partial"),
            })
            break


def _round(x):
    if x is None or not isinstance(x, float):
        return x
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return float(f"{x:.6g}")
