"""Wall time and numerics of the torchtitan harness with and without the monitor.

    python bench/real_client/compare.py [--nproc 2] [--backend gloo] [--repeat 3] [--ep]

Each run is one launch through placement-lint's own launcher (torchrun), the same one `confirm`
uses: mode "plain" calls the harness bare, mode "check" runs it under the PlacementMonitor and
does the fingerprint exchange and the verdicts (what `confirm` does minus the static pass and
the report). Reported, best of --repeat:
  launch   wall time of the launch (process start-up, imports, rendezvous, harness, teardown)
  harness  time inside the harness, torchtitan's import and the model build included (check:
           + collection, the one gather, the verdicts)
  step     one forward + backward of the model (the harness times it; slowest rank), median:
           the monitor's own cost on the training step
Numerics: the harness dumps (TT_DUMP) the loss and every parameter gradient's local norm on
every rank; the plain and the check dumps of the last repeat are compared for bitwise equality.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
HARNESS = "bench/real_client/torchtitan_moe.py:harness"


def run(mode: str, nproc: int, backend: str, dump: str, ep: bool, harness: str) -> tuple[float, float, dict]:
    from placement_lint.runtime.launcher import LaunchOptions, launch

    env = {"TT_DUMP": dump, "TT_EP": "1" if ep else "0"}
    t0 = time.perf_counter()
    out = launch({"harnesses": [harness], "cwd": str(ROOT), "mode": mode},
                 LaunchOptions(nproc=nproc, backend=backend, timeout=600, extra_env=env))
    wall = time.perf_counter() - t0
    res = out["results"][0]
    return wall, res.get("seconds", 0.0), res


def load_dumps(prefix: str, nproc: int) -> list[dict]:
    return [json.load(open(f"{prefix}.rank{r}.json")) for r in range(nproc)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--backend", default="gloo")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ep", action="store_true", help="expert parallelism (TT_EP=1)")
    ap.add_argument("--harness", default=HARNESS)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from placement_lint.runtime.launcher import resolve_backend

    backend = resolve_backend(args.backend, args.nproc)
    tmp = tempfile.mkdtemp(prefix="tt-compare-")
    rows, dumps, verdicts = {}, {}, None
    steps = {"plain": [], "check": []}
    for i in range(args.repeat):
        # interleaved, and the order alternates, so drift in machine load and a cold file cache
        # hit both modes alike
        for mode in (("plain", "check") if i % 2 == 0 else ("check", "plain")):
            prefix = os.path.join(tmp, f"{mode}{i}")
            wall, inner, res = run(mode, args.nproc, backend, prefix, args.ep, args.harness)
            best = rows.get(mode)
            rows[mode] = (wall, inner) if best is None or wall < best[0] else best
            rows.setdefault(mode + "_all", []).append((round(wall, 2), round(inner, 3)))
            dumps[mode] = load_dumps(prefix, args.nproc)
            steps[mode].append(max(d.get("step_seconds") or 0.0 for d in dumps[mode]))
            if mode == "check":
                verdicts = res
    import torch

    print(f"{args.harness} ({'TP=2 + EP=2' if args.ep else 'TP=2'}), {args.nproc} ranks, "
          f"backend {backend}, torch {torch.__version__}, best of {args.repeat}")
    print(f"{'':8} {'launch s':>10} {'harness s':>10}")
    for mode in ("plain", "check"):
        print(f"{mode:8} {rows[mode][0]:10.2f} {rows[mode][1]:10.3f}   all: {rows[mode + '_all']}")
    print(f"{'ratio':8} {rows['check'][0] / rows['plain'][0]:10.2f} "
          f"{rows['check'][1] / max(rows['plain'][1], 1e-9):10.2f}")
    import statistics

    med = {m: statistics.median(v) for m, v in steps.items()}
    print(f"one forward+backward (slowest rank), median of {args.repeat}: plain {med['plain']:.3f} s, "
          f"check {med['check']:.3f} s, ratio {med['check'] / max(med['plain'], 1e-9):.2f}  "
          f"(all: plain {[round(x, 3) for x in steps['plain']]}, check {[round(x, 3) for x in steps['check']]})")
    rows["steps"] = steps

    same = True
    for r in range(args.nproc):
        a, b = dumps["plain"][r], dumps["check"][r]
        diffs = [k for k in a["grad_norms"] if a["grad_norms"][k] != b["grad_norms"].get(k)]
        eq = a["loss"] == b["loss"] and not diffs and a["grad_norms"].keys() == b["grad_norms"].keys()
        same &= eq
        print(f"rank {r}: loss plain {a['loss']!r} check {b['loss']!r}; "
              f"{len(a['grad_norms'])} parameter gradients, {len(diffs)} differ"
              + (f" ({diffs[:5]})" if diffs else "") + ("  -> bitwise equal" if eq else ""))
    keys = [k for k in dumps["plain"][0]["grad_norms"] if any(s in k for s in
            ("router.gate.weight", "inner_experts.w1_EFD", "shared_experts.w2.weight",
             "tok_embeddings.weight", "attention.wkv_a.weight", "linear_fc2.bias"))][:6]
    for k in keys:
        print(f"  {k}: " + ", ".join(f"r{r} plain {dumps['plain'][r]['grad_norms'][k]:.9g} "
                                     f"check {dumps['check'][r]['grad_norms'][k]:.9g}"
                                     for r in range(args.nproc)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "dumps": dumps, "verdicts": verdicts, "bitwise_equal": same,
                       "torch": torch.__version__, "backend": backend}, fh, indent=1, default=str)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
