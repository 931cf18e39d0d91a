"""Merge runtime verdicts into static findings; add the runtime-only findings. No torch here.

Each static finding gets the verdict of the runtime sites it is about (matching.py; files are
compared through paths.py), or `not-reached` with the reason. A bad site that no static finding
claims, and a bad parameter gradient, become findings of their own. Before the run,
`watch_lines` hands the monitor the static findings' lines.

Runtime-only findings (codes reserved for the runtime checker):
  DTP901 diverging-replicated-gradient   a replicated parameter's gradient differs across ranks
  DTP902 double-counted-gradient         Partial label on a gradient every rank computed in full
  DTP903 unflagged-local-conversion      a DTensor exit whose gradient contradicts its label,
                                         at a line the static pass did not flag
  DTP904 reference-gradient-mismatch     (--reference) a parameter gradient differs from the
                                         one-rank run of the same harness
"""

from __future__ import annotations

import importlib.util
import os

from placement_lint.findings import Confidence, Finding, Related, Report
from placement_lint.runtime.matching import (
    _all_sites, _Matcher, local_map_form, match_sites, module_key_of_target, path_index,
)
from placement_lint.runtime.paths import PathIndex, _abs, _rel, _source_lines, _unreal
from placement_lint.runtime.site_ids import split_site_id
from placement_lint.runtime.verdicts import SEVERITY

# local_map_form, match_sites and module_key_of_target live in matching.py;
# tests/runtime/test_merge_matching.py still reaches them as merge.<name>
__all__ = [
    "BAD", "EXIT_APIS", "RUNTIME_RULES", "PathIndex", "exit_code", "merge", "path_index", "runtime_summary",
    "verify_targets", "watch_lines", "local_map_form", "match_sites", "module_key_of_target",
]


def _runtime_rules() -> dict[str, str]:
    from placement_lint.rule import all_rules

    return {r.CODE: r.SLUG for r in all_rules() if r.RUNTIME_ONLY}


#: code -> slug of the runtime-only rules (rules/dtp90*.py)
RUNTIME_RULES = _runtime_rules()
BAD = ("confirmed", "mixed", "double-count")
EXIT_APIS = ("to_local", "full_tensor")


def watch_lines(report: Report, cwd: str) -> list[tuple[str, int]]:
    """(path, line) of every static finding, for the monitor (slices there are recorded), plus the
    same lines in a byte-identical copy of the package that this interpreter would import instead
    (the ranks then run that copy: see PathIndex)."""
    index = PathIndex(cwd)
    watch = {(_abs(f.path, cwd), f.line) for f in report.findings}
    installed: dict[str, str | None] = {}  # top-level package name -> directory holding it
    for path, line in sorted(watch):
        rel = index.package_relative(path)
        if rel is None:
            continue
        name = rel.split(os.sep)[0]
        if name not in installed:
            installed[name] = _import_root(name)
        root = installed[name]
        if root is None:
            continue
        other = os.path.normpath(os.path.join(root, rel))
        if other != path and os.path.isfile(other) and index.digest(other) == index.digest(path):
            watch.add((other, line))
    return sorted(watch)


def _import_root(name: str) -> str | None:
    """The directory the top-level package `name` is imported from here, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.path.dirname(os.path.abspath(locations[0])) if len(locations) == 1 else None


def _verdict_of(sites: list[dict]) -> tuple[str, dict, dict | None]:
    """Worst verdict among the exits (the cause); wrappers like from_local only if no exit."""
    exits = [s for s in sites if s["api"] != "from_local"] or sites
    best = max(exits, key=lambda s: (SEVERITY.get(s["verdict"], 0), s["evidence"].get("max_rel_diff") or 0))
    ev = dict(best["evidence"])
    ev["site"] = f"{best['path']}:{best['line']}"
    ev["harness"] = best.get("harness")
    if len(sites) > 1:
        ev["sites"] = [
            {"site": f"{s['path']}:{s['line']}", "api": s["api"], "module": s.get("module", ""),
             "hook": s.get("hook", ""), "verdict": s["verdict"], "harness": s.get("harness")}
            for s in sites
        ]
    return best["verdict"], ev, best


def merge(report: Report, results: list[dict], cwd: str, *, reference: bool = False,
          paths: PathIndex | None = None) -> Report:
    sites = _all_sites(results)
    if paths is None:
        paths = path_index(report, results, cwd)
    matcher = _Matcher(sites, cwd, paths)
    for res in results:
        if isinstance(res.get("loaded_files"), list):
            matcher.loaded[res.get("harness")] = {paths.canon(p) for p in res["loaded_files"]}
    matches = [(f, matcher.match(f)) for f in report.findings]
    # sites matched by module name only (DTP103 on a config object), and which findings claim them
    claims: dict[tuple, list[Finding]] = {}
    for f, _m in matches:
        for s in matcher.by_module.get(id(f), ("", []))[1]:
            claims.setdefault((s.get("harness"), s["id"]), []).append(f)
    used: set[tuple] = set()
    for f, m in matches:
        if not m:
            f.runtime = {"verdict": "not-reached", "evidence": _not_reached(f, matcher, results)}
            continue
        verdict, ev, _best = _verdict_of(m)
        key, named = matcher.by_module.get(id(f), ("", []))
        rivals = sorted({f"{g.path}:{g.line}" for s in named for g in claims[(s.get("harness"), s["id"])] if g is not f})
        if rivals:
            # Several configs name this module (other models' sharding files, an override): the run
            # shows that the module's local_map ran, not which config was in effect. No verdict,
            # and the sites stay unclaimed so that a bad one is still reported on its own (DTP903).
            f.runtime = {"verdict": "inconclusive", "evidence": dict(ev, detail=(
                f"matched by module path `{key}` only, which {len(rivals)} other finding(s) also configure "
                f"({', '.join(rivals[:3])}{', ...' if len(rivals) > 3 else ''}): the run does not show which "
                f"config was in effect; the sites' verdict: {verdict}"), site_verdict=verdict, module_key=key,
                other_findings=rivals)}
            continue
        for s in m:
            used.add((s.get("harness"), s["id"]))
        f.runtime = {"verdict": verdict, "evidence": ev}
        _relate_sites(f, m, paths, cwd)
    statically_flagged_lines = {(_abs(f.path, cwd), f.line) for f in report.findings}
    extra: list[Finding] = []
    for s in sites:
        if (s.get("harness"), s["id"]) in used or s["verdict"] not in BAD:
            continue
        if (paths.canon(s["path"]), s["line"]) in statically_flagged_lines:
            continue
        related: list[Related] = []
        if s["verdict"] == "double-count" and s["evidence"].get("reduced_again_by"):
            code = "DTP902"
            dim = s["evidence"].get("mesh_dim")
            n = len(s["evidence"].get("group_ranks") or [])
            _api, rpath, rline, *_ = split_site_id(s["evidence"]["reduced_again_by"])
            rpath = paths.canon(rpath) if not _unreal(rpath) else rpath
            msg = (f"`from_local(..., [Replicate()])` all-reduces this branch's gradient in its backward, and "
                   f"`{_api}` at {_rel(rpath, cwd)}:{rline} labels the same local tensor's gradient Partial, "
                   f"which sums it again: the branch counts {n}x over mesh dim `{dim}` (hand this branch the "
                   f"DTensor instead of a local tensor, so that it is reduced once)")
            if rline.isdigit() and not _unreal(rpath):
                related.append(Related(_rel(rpath, cwd), int(rline),
                                       "the Partial label that reduces this branch's gradient a second time"))
        elif s["verdict"] == "double-count":
            code = "DTP902"
            dim = s["evidence"].get("mesh_dim")
            n = len(s["evidence"].get("group_ranks") or [])
            msg = (f"`{s['api']}` labels the gradient Partial but every rank of mesh dim `{dim}` computed the "
                   f"same full gradient: the reduction counts it {n}x (drop grad_placements or use Replicate())")
        elif s["api"] in EXIT_APIS or s.get("local_map"):
            code = "DTP903"
            dim = s["evidence"].get("mesh_dim")
            msg = (f"the gradient reaching this `{s['api']}` differs across the ranks of mesh dim `{dim}` "
                   f"but is labelled Replicate ({s['verdict']}); pass grad_placements=(Partial(),)")
        else:
            continue  # slices and from_local symptoms: their cause is reported at an exit
        # reported in the analysed copy when the ranks ran a byte-identical one (review bots
        # annotate the files they were given)
        extra.append(_finding(code, paths.canon(s["path"]), s["line"], msg, cwd, s.get("function", ""),
                              {"verdict": s["verdict"], "evidence": dict(s["evidence"], harness=s.get("harness"))}))
        extra[-1].related.extend(related)
    for res in results:
        for p in res.get("params", []):
            loc = p.get("location") or {}
            path, line = loc.get("path") or res.get("harness", "?").rpartition(":")[0], loc.get("line") or 1
            if p.get("status") == "diverging":
                msg = (f"gradient of replicated parameter `{p['name']}` ({', '.join(p.get('placements') or [])}) "
                       f"differs across the ranks of mesh dim `{p.get('mesh_dim')}` (max rel diff "
                       f"{p.get('max_rel_diff')}): the replicas drift apart at the next optimizer step")
                extra.append(_finding("DTP901", path, line, msg, cwd, p["name"],
                                      {"verdict": "confirmed", "evidence": _param_evidence(p, res)}))
            elif reference and p.get("matches_reference") is False:
                worst = max((v for v in (p.get("reference_rel_diff") or {}).values() if isinstance(v, (int, float))),
                            default=None)
                tol = ("" if p.get("reference_tolerance") is None else
                       f"; tolerance {p['reference_tolerance']} (--reference-rtol)" if p.get("tolerance_source") else
                       f"; tolerance {p['reference_tolerance']} for {p['compute_dtype']} compute")
                scales = list((p.get("reference_scale") or {}).values())
                uniform = (f", {scales[0][0]:.3g}x the reference on every rank"
                           if scales and all(v[1] > 0.99 and abs(v[0] - scales[0][0]) < 1e-3 for v in scales) else "")
                first = next((loc for loc in res.get("localization") or () if p["name"] in loc.get("wrong_params", ())
                              or p["name"].startswith(loc["module"] + ".") or not loc["module"]),
                             next(iter(res.get("localization") or ()), None))
                msg = (f"gradient of parameter `{p['name']}` differs from the one-rank reference run "
                       f"(max rel diff {worst}{tol}){uniform}: a collective is missing or runs twice"
                       + (f"; {first['summary']}" if first else ""))
                extra.append(_finding("DTP904", path, line, msg, cwd, p["name"],
                                      {"verdict": "confirmed", "evidence": _param_evidence(p, res)}))
    if reference:
        for res in results:
            extra.extend(_localized(res, paths, cwd))
    report.findings.extend(extra)
    report.findings.sort(key=lambda f: f.sort_key())
    return report


def _localized(res: dict, paths: PathIndex, cwd: str) -> list[Finding]:
    """DTP904 where a wrong gradient first appears (--reference) and no site inside the module
    was found bad (a gradient wrong identically on every rank): at the module's forward, with the
    DTensor entries and exits inside it as related locations."""
    from placement_lint.runtime.localize import site_list

    out = []
    for loc in res.get("localization") or ():
        where = loc.get("location") or {}
        sites = [s for s in loc.get("sites", ()) if not _unreal(s.get("path", ""))]
        if any(s.get("verdict") in BAD for s in sites):
            continue  # the cause is reported at that site; the parameters' DTP904 name the module

        if where.get("path"):
            path, line = paths.canon(where["path"]), where["line"]
        elif sites:
            path, line = paths.canon(sites[0]["path"]), sites[0]["line"]
        else:
            continue
        inside = site_list({"sites": [dict(s, path=_rel(paths.canon(s["path"]), cwd)) for s in sites]})
        msg = loc["summary"] + (f"; DTensor entries and exits inside it: {inside}" if inside else
                                "; no DTensor entry or exit ran inside it")
        f = _finding("DTP904", path, line, msg, cwd, loc["module"] or "<root>",
                     {"verdict": "confirmed", "evidence": {"localization": loc, "harness": res.get("harness")}})
        for s in sites[:_RELATED_SITES + 1]:
            label = ", ".join(s["declared"]) if s.get("declared") else "default label"
            f.related.append(Related(_rel(paths.canon(s["path"]), cwd), s["line"],
                                     f"`{s['api']}` inside {loc['module'] or 'the root module'} ({label}): {s.get('verdict')}"))
        out.append(f)
    return out


def _not_reached(f: Finding, matcher: _Matcher, results: list[dict]) -> dict:
    """Why no site matched `f`: its file was never imported by the ranks, or it was and the line
    (for a style: no module named by the plan entry's key) never ran. Tells the user how to
    extend the harness."""
    fpath = _abs(f.path, matcher.cwd)
    known = [h for h in (r.get("harness") for r in results) if h in matcher.loaded]
    imported = None if len(known) < len(results) else any(fpath in matcher.loaded[h] for h in known)
    keys = matcher.plan_keys.get(id(f)) or []
    if imported is False:
        reason = "the ranks never imported this file: the harness builds no model from it"
    elif keys:
        reason = (f"no module whose name ends with {', '.join(f'`{k}`' for k in keys)} ran a hook of this style: "
                  "the harness never called that module (or built a model without this plan entry)")
    else:
        reason = "no harness executed this line" + ("" if imported else " (or the module this style is applied to)")
    ev = {"reason": reason, "harnesses": [r.get("harness") for r in results]}
    if imported is not None:
        ev["file_imported"] = imported
    if keys:
        ev["plan_keys"] = keys
    return ev


#: runtime sites named as `related` locations of the static finding they matched, at most
_RELATED_SITES = 3


def _relate_sites(f: Finding, sites: list[dict], paths: PathIndex, cwd: str) -> None:
    """A site matched elsewhere than the finding's own line (a torch style's hook, attributed to
    the harness line that called the module, matched to the plan entry that applied the style)
    becomes a `related` location: where the run reached it."""
    have = {(_abs(f.path, cwd), f.line)} | {(_abs(r.path, cwd), r.line) for r in f.related}
    added = 0
    for s in sites:
        if _unreal(s.get("path", "")):
            continue
        loc = (paths.canon(s["path"]), s["line"])
        if loc in have or added >= _RELATED_SITES:
            continue
        have.add(loc)
        added += 1
        where = f" in the {s['hook']} hook of `{s.get('module')}`" if s.get("hook") in ("pre", "post") else ""
        via = f" ({s['torch_frame']})" if s.get("torch_frame") else ""
        f.related.append(Related(_rel(loc[0], cwd), loc[1],
                                 f"runtime: `{s['api']}`{where} reached from here{via}: {s.get('verdict')}"))


def _param_evidence(p: dict, res: dict) -> dict:
    ev = {k: p.get(k) for k in ("name", "placements", "dtype", "mesh_dim", "group_ranks",
                                "per_rank_grad_norms", "max_rel_diff", "reference_rel_diff",
                                "matches_reference", "compute_dtype", "reference_tolerance", "tolerance_source",
                                "reference_scale") if p.get(k) is not None}
    ev["harness"] = res.get("harness")
    ev["torch_version"] = res.get("torch")
    return ev


def _finding(code: str, path: str, line: int, msg: str, cwd: str, symbol: str, runtime: dict) -> Finding:
    apath = _abs(path, cwd)
    text = _source_lines(apath, line, 1)
    col = len(text) - len(text.lstrip()) + 1 if text else 1
    return Finding(code=code, slug=RUNTIME_RULES[code], path=_rel(apath, cwd), line=line, column=col,
                   end_line=line, end_column=max(len(text) + 1, col), message=msg, confidence=Confidence.HIGH,
                   symbol=symbol, related=[], fix=None, runtime=runtime)


def exit_code(report: Report) -> int:
    if report.errors:
        return 2
    for f in report.findings:
        if (f.runtime or {}).get("verdict") != "refuted":
            return 1
    return 0


def verify_targets(results: list[dict], report: Report) -> tuple[dict, dict[str, list[tuple[str, int]]]]:
    """What --verify-fix injects: {harness: {site_id: kinds}} and untracked slice lines.

    Confirmed exits get Partial on the flagged mesh dim; double-counts get Replicate; a confirmed
    slice is fixed at the local tensor it derives from (root), or — for a slice of a tensor that
    never was a DTensor — by summing its gradient over the replicas (what redistribute would do).
    """
    force: dict[str, dict[str, list]] = {}
    slices: dict[str, list[tuple[str, int]]] = {}
    by_id = {(r.get("harness"), s["id"]): s for r in results for s in r.get("sites", [])}
    for res in results:
        h = res.get("harness")
        for s in res.get("sites", []):
            if s["verdict"] not in BAD:
                continue
            dim = s["evidence"].get("mesh_dim_index")
            kind = "R" if s["verdict"] == "double-count" else "P"
            if s["api"] == "from_local":
                continue
            target = s
            if s["api"] == "slice":
                if not s.get("root"):
                    slices.setdefault(h, []).append((s["path"], s["line"]))
                    continue
                target = by_id.get((h, s["root"]), s)
                kind = "P"
            ndim = len(target["evidence"].get("forward_placements") or []) or (dim + 1 if dim is not None else 1)
            kinds: list = [None] * ndim
            if dim is not None and dim < ndim:
                kinds[dim] = kind
            force.setdefault(h, {})[target["id"]] = kinds
    return force, slices


def runtime_summary(report: Report, results: list[dict]) -> dict[str, int]:
    """What the runtime check saw, for the one-line summary (text) and `runtime_summary` (json):
    an empty report means little when the monitor saw nothing."""
    static = [f for f in report.findings if f.code not in RUNTIME_RULES]
    missed = [(f.runtime or {}).get("evidence") or {} for f in static
              if (f.runtime or {}).get("verdict", "not-reached") == "not-reached"]
    never_imported = sorted({f.path for f in static if ((f.runtime or {}).get("evidence") or {}).get("file_imported") is False
                             and f.runtime.get("verdict") == "not-reached"})
    return {
        "not_imported_files": never_imported,
        "plan_entries_not_run": sorted({k for ev in missed if ev.get("file_imported") is not False
                                        for k in ev.get("plan_keys", ())}),
        "harnesses": len(results),
        "sites_reached": sum(len(r.get("sites") or ()) for r in results),
        "parameters_checked": sum(len(r.get("params") or ()) for r in results),
        "static_findings": len(static),
        "static_findings_reached": sum(1 for f in static if (f.runtime or {}).get("verdict", "not-reached") != "not-reached"),
        "runtime_findings": len(report.findings) - len(static),
    }
