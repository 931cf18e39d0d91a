"""Tables for docs/runtime.md ("Real client") from the reports run_all.sh leaves in OUTDIR.

    python bench/real_client/summarize.py OUTDIR
"""
from __future__ import annotations

import collections
import json
import os
import sys

RUNS = [
    ("tt_confirm.json", "brief's command (default threshold)"),
    ("tt_confirm_low.json", "TP=2, every finding (low+)"),
    ("tt_confirm_ep.json", "TP=2 + EP=2, low+"),
    ("tt_confirm_ref.json", "TP=2, low+, --reference"),
    ("tt_confirm_ref_fp32.json", "TP=2, low+, --reference, fp32 expert matmuls"),
    ("tt_confirm_sb.json", "ScaledBiasRowwiseLinear, low+"),
    ("tt_confirm_sb_ref.json", "ScaledBiasRowwiseLinear, low+, --reference --verify-fix"),
    ("tt_confirm_dtensor_init.json", "TP=2, low+, torchtitan's DTensor init (TT_INIT=dtensor)"),
]


def short(path: str) -> str:
    return path.split("torchtitan/", 1)[-1] if "torchtitan/" in path else path


def load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def main(out: str) -> None:
    print("| run | findings | verdicts (static findings) | runtime-only |")
    print("|---|---|---|---|")
    for name, label in RUNS:
        d = load(os.path.join(out, name))
        if d is None:
            print(f"| {label} | (no report) | | |")
            continue
        fs = d["findings"]
        static = collections.Counter((f.get("runtime") or {}).get("verdict") for f in fs
                                     if not f["code"].startswith("DTP9"))
        rt = collections.Counter(f["code"] for f in fs if f["code"].startswith("DTP9"))
        print(f"| {label} | {len(fs)} | {dict(static) or '-'} | {dict(rt) or '-'} |")

    for name, label in RUNS:
        d = load(os.path.join(out, name))
        if not d:
            continue
        shown = [f for f in d["findings"] if (f.get("runtime") or {}).get("verdict") != "not-reached"]
        if not shown:
            continue
        print(f"\n**{label}** ({name}): findings with a runtime verdict other than not-reached\n")
        print("| code | conf | location (torchtitan/) | verdict | evidence |")
        print("|---|---|---|---|---|")
        for f in shown:
            rt = f["runtime"]
            ev = rt.get("evidence") or {}
            bits = []
            for k in ("name", "module", "forward_placements", "declared_grad_placements", "max_rel_diff",
                      "per_rank_grad_norms", "reference_rel_diff"):
                if ev.get(k) not in (None, "", [], {}):
                    bits.append(f"{k}={ev[k]}")
            if ev.get("reason"):
                bits.append(ev["reason"][:60])
            fv = ev.get("fix_verified")
            if fv:
                bits.append(f"fix_verified={fv.get('verified')}")
            print(f"| {f['code']} | {f['confidence']} | {short(f['path'])}:{f['line']} | {rt['verdict']} | "
                  f"{'; '.join(bits)[:300]} |")

    for keep, label in (("keep_low", "TP=2"), ("keep_ep", "TP=2 + EP=2")):
        d = load(os.path.join(out, keep, "result.json"))
        if not d:
            continue
        r = d["results"][0]
        print(f"\n**Sites the monitor instrumented, {label}** ({len(r['sites'])} sites; "
              f"{dict(collections.Counter(s['verdict'] for s in r['sites']))}; parameters: "
              f"{dict(collections.Counter(p['status'] for p in r['params']))} of {len(r['params'])}; "
              f"harness {r.get('harness_seconds')} s, with collection {r.get('seconds')} s)\n")
        print("| api | site (torchtitan/) | forward | grad label | modules | verdicts |")
        print("|---|---|---|---|---|---|")
        groups: dict = {}
        for s in r["sites"]:
            lm = s.get("local_map") or ""
            if lm:
                fn = lm.split("|")[0]
                lm = f" in local_map({short(fn)}{', ' + lm.split('|')[1] if '|' in lm else ''})"
            key = (s["api"] + lm, f"{short(s['path'])}:{s['line']}")
            g = groups.setdefault(key, {"mods": [], "v": collections.Counter(), "fwd": set(), "decl": set(),
                                        "nograd": 0})
            g["mods"].append(s.get("module") or "-")
            g["v"][s["verdict"]] += 1
            ev = s["evidence"]
            g["fwd"].add(",".join(ev.get("forward_placements") or []))
            g["decl"].add(",".join(ev.get("declared_grad_placements") or []) or "default")
            g["nograd"] += "no gradient flows" in (ev.get("reason") or "")
        for (api, loc), g in groups.items():
            mods = sorted(set(g["mods"]))
            ms = ", ".join(mods) if len(mods) <= 2 else f"{mods[0]} ... ({len(mods)})"
            v = ", ".join(f"{k} {n}" for k, n in g["v"].items())
            if g["nograd"]:
                v += f" ({g['nograd']} without gradient)"
            print(f"| {api} | {loc} | {'/'.join(sorted(g['fwd']))} | {'/'.join(sorted(g['decl']))} | {ms} | {v} |")

    for name in ("compare_tp.txt", "compare_ep.txt", "times.txt", "versions.txt"):
        p = os.path.join(out, name)
        if os.path.exists(p):
            print(f"\n`{name}`:\n```")
            print(open(p).read().rstrip())
            print("```")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/real_client")
