"""Merge runtime verdicts into static findings; add the runtime-only findings. No torch here.

Matching a static finding to runtime sites:
* by file:line — the static finding's line is where the flagged call/subscript starts, and a
  site's line is the user frame that made the call (DTP101, DTP201);
* DTP102 (style applied in a plan): by the finding's `related` locations (the hook's bare
  `to_local()`) and by module path — the plan key written on the finding's line
  (`"router.gate": NoParallel()`) against the module path of hook sites (`layers.0.router.gate`);
* DTP103 (`local_map(`): by the function handed to local_map, which the monitor records for the
  conversions local_map makes on the user's behalf.

Runtime-only findings (codes reserved for the runtime checker):
  DTP901 diverging-replicated-gradient   a replicated parameter's gradient differs across ranks
  DTP902 double-counted-gradient         Partial label on a gradient every rank computed in full
  DTP903 unflagged-local-conversion      a DTensor exit whose gradient contradicts its label,
                                         at a line the static pass did not flag
  DTP904 reference-gradient-mismatch     (--reference) a parameter gradient differs from the
                                         one-rank run of the same harness
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

from placement_lint.findings import Confidence, Finding, Related, Report
from placement_lint.runtime.verdicts import SEVERITY

def _runtime_rules() -> dict[str, str]:
    from placement_lint.rule import all_rules

    return {r.CODE: r.SLUG for r in all_rules() if r.RUNTIME_ONLY}


#: code -> slug of the runtime-only rules (rules/dtp90*.py)
RUNTIME_RULES = _runtime_rules()
BAD = ("confirmed", "mixed", "double-count")
EXIT_APIS = ("to_local", "full_tensor")

_PLAN_KEY = re.compile(r"""["']([A-Za-z0-9_.*\-]+)["']\s*:""")
_LOCAL_MAP_FN = re.compile(r"local_map\(\s*([A-Za-z_][\w.]*)")


def _abs(path: str, cwd: str) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(cwd, path))


def _rel(path: str, cwd: str) -> str:
    ap = os.path.abspath(path)
    root = os.path.abspath(cwd).rstrip(os.sep) + os.sep
    return ap[len(root):] if ap.startswith(root) else ap


def _source_lines(path: str, line: int, count: int = 4) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[line - 1:line - 1 + count])


def _module_matches(module: str, key: str) -> bool:
    """Plan keys are relative to the module parallelize_module was applied to; the runtime path is
    relative to the model the harness called: match on a dotted suffix (wildcards allowed)."""
    if not module:
        return False
    parts = module.split(".")
    kparts = key.split(".")
    if len(kparts) > len(parts):
        return False
    for start in range(len(parts) - len(kparts) + 1):
        window = parts[start:start + len(kparts)]
        if len(window) == len(kparts) and all(fnmatch.fnmatchcase(p, k) for p, k in zip(window, kparts)):
            if start + len(kparts) == len(parts):
                return True
    return False


def _all_sites(results: list[dict]) -> list[dict]:
    out = []
    for res in results:
        for s in res.get("sites", []):
            out.append(dict(s, harness=res.get("harness")))
    return out


def match_sites(f: Finding, sites: list[dict], cwd: str) -> list[dict]:
    fpath = _abs(f.path, cwd)
    at_line = [s for s in sites if _abs(s["path"], cwd) == fpath and s["line"] == f.line]
    matched = list(at_line)
    if f.code == "DTP102":
        rel = {(_abs(r.path, cwd), r.line) for r in f.related}
        matched += [s for s in sites if (_abs(s["path"], cwd), s["line"]) in rel]
        keys = _PLAN_KEY.findall(_source_lines(fpath, f.line, 1))
        if not keys:  # the key may sit on the line above a long style call
            keys = _PLAN_KEY.findall(_source_lines(fpath, max(1, f.line - 1), 2))
        for key in keys:
            matched += [s for s in sites if s.get("hook") in ("pre", "post") and _module_matches(s.get("module", ""), key)]
    if f.code == "DTP103":
        text = _source_lines(fpath, f.line, 6)
        m = _LOCAL_MAP_FN.search(text)
        name = m.group(1).split(".")[-1] if m else None
        lm_sites = [s for s in sites if s.get("local_map")]
        for s in lm_sites:
            lm_file, _, rest = s["local_map"].split("|")[0].rpartition(":")
            lm_file, _, _first = lm_file.rpartition(":")
            fn_name = rest
            if name and fn_name == name:
                matched.append(s)
            elif not name and _abs(lm_file, cwd) == fpath:  # decorator form: same file
                matched.append(s)
    seen, out = set(), []
    for s in matched:
        key = (s.get("harness"), s["id"])
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


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


def merge(report: Report, results: list[dict], cwd: str, *, reference: bool = False) -> Report:
    sites = _all_sites(results)
    used: set[tuple] = set()
    for f in report.findings:
        m = match_sites(f, sites, cwd)
        if not m:
            f.runtime = {"verdict": "not-reached", "evidence": {
                "reason": "no harness executed this line (or the module this style is applied to)",
                "harnesses": [r.get("harness") for r in results]}}
            continue
        for s in m:
            used.add((s.get("harness"), s["id"]))
        verdict, ev, _best = _verdict_of(m)
        f.runtime = {"verdict": verdict, "evidence": ev}
    statically_flagged_lines = {(_abs(f.path, cwd), f.line) for f in report.findings}
    extra: list[Finding] = []
    for s in sites:
        if (s.get("harness"), s["id"]) in used or s["verdict"] not in BAD:
            continue
        if (_abs(s["path"], cwd), s["line"]) in statically_flagged_lines:
            continue
        if s["verdict"] == "double-count":
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
        extra.append(_finding(code, s["path"], s["line"], msg, cwd, s.get("function", ""),
                              {"verdict": s["verdict"], "evidence": dict(s["evidence"], harness=s.get("harness"))}))
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
                msg = (f"gradient of parameter `{p['name']}` differs from the one-rank reference run "
                       f"(max rel diff {worst}): a collective is missing or runs twice")
                extra.append(_finding("DTP904", path, line, msg, cwd, p["name"],
                                      {"verdict": "confirmed", "evidence": _param_evidence(p, res)}))
    report.findings.extend(extra)
    report.findings.sort(key=lambda f: f.sort_key())
    return report


def _param_evidence(p: dict, res: dict) -> dict:
    ev = {k: p.get(k) for k in ("name", "placements", "dtype", "mesh_dim", "group_ranks",
                                "per_rank_grad_norms", "max_rel_diff", "reference_rel_diff",
                                "matches_reference") if p.get(k) is not None}
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
