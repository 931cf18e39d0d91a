"""Overhead of the runtime checker: `confirm`'s work over the fixture suite vs the same harnesses
without the monitor.

    python bench/runtime_bench.py [--nproc 2] [--backend gloo|nccl|auto] [--repeat 3]

Each configuration is one torchrun launch running every fixture harness in turn (the same
batching `confirm` uses). Reported per configuration, best of --repeat:
  launch   wall time of the whole launch (process start-up, rendezvous, harnesses, teardown)
  harness  summed time inside the harnesses (plain: harness call; check: harness under the
           monitor + fingerprint collection + the one gather + verdicts)
The overhead ratio is check/plain for both. On CPU gloo the launch is dominated by starting
Python + torch on every rank; the harness column isolates the monitor's cost.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def harnesses() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) + ":harness" for p in (ROOT / "fixtures/harnesses").glob("[a-z]*.py"))


def run(mode: str, nproc: int, backend: str) -> tuple[float, float]:
    from placement_lint.runtime.launcher import LaunchOptions, launch

    t0 = time.perf_counter()
    out = launch({"harnesses": harnesses(), "cwd": str(ROOT), "mode": mode},
                 LaunchOptions(nproc=nproc, backend=backend, timeout=600))
    wall = time.perf_counter() - t0
    inner = sum(r.get("seconds", 0.0) for r in out["results"])
    return wall, inner


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--backend", default="gloo")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from placement_lint.runtime.launcher import resolve_backend

    backend = resolve_backend(args.backend, args.nproc)
    rows = {}
    for mode in ("plain", "check"):
        best = None
        for _ in range(args.repeat):
            r = run(mode, args.nproc, backend)
            best = r if best is None or r[0] < best[0] else best
        rows[mode] = best
    n = len(harnesses())
    import torch

    print(f"fixture suite: {n} harnesses, {args.nproc} ranks, backend {backend}, torch {torch.__version__}, "
          f"best of {args.repeat}")
    print(f"{'':8} {'launch s':>10} {'harness s':>10}")
    for mode in ("plain", "check"):
        print(f"{mode:8} {rows[mode][0]:10.2f} {rows[mode][1]:10.3f}")
    print(f"{'ratio':8} {rows['check'][0] / rows['plain'][0]:10.2f} "
          f"{rows['check'][1] / max(rows['plain'][1], 1e-9):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
