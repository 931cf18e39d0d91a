"""Issue 11, deep code and big files: time and peak memory of the real CLI on generated inputs.

    .venv/bin/python bench/hostile.py                 # the scaling and deep-code tables (~2 min)
    .venv/bin/python bench/hostile.py --sizes 1,2,4   # dense and long-function files of these MB
    .venv/bin/python bench/hostile.py --big 20        # also 20 MB dense and quiet files (~15 min)
    .venv/bin/python bench/hostile.py --profile dense:2 [--mode positions]   # cProfile, in process
    .venv/bin/python bench/hostile.py --src /tmp/before --sizes 0.5 --shapes dense   # another tree

Every row is one fresh `placement-lint --no-cache` process (`-j 1` unless `--jobs N`: from 2 MB a
file is split across the workers, file_parts.py) over a temporary directory holding only the
generated files; wall seconds and the child's own peak RSS (VmHWM, read by the child at exit),
and with --jobs the largest worker's (RUSAGE_CHILDREN: the workers are forked, their pages shared
with the parent until written, so the sum overstates). Ratios are against the baseline of the same
invocation: copies of fixtures/tp_expert_matmul.py (DTP101 each) totalling the same size.

Shapes:
- dense: many small functions dense with `to_local()`, each a DTP101 (every block parsed, every
  site positioned in phase three);
- quiet: many small functions whose bare `to_local()`s are only low-confidence DTP101s (at
  the default threshold the file is analysed once; with --min-confidence low, positioned too);
- long: one function of N lines, each a `to_local()` feeding the next (exits accumulate);
- deep: the fixture with its line 34 nested (calls, lists, chained calls, `+`, conditional
  expressions...) near the depth guard's limits, and past them (DTP000).
Standard library only; the inputs are built in memory, nothing is imported from them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: --src: another source tree of placement-lint to measure (e.g. `git archive REV | tar -x -C DIR`)
SRC = ""
#: a run longer than this is killed (and reported so)
TIMEOUT = 900
#: --jobs: the CLI's worker processes
JOBS = "1"
FIXTURE = (ROOT / "fixtures" / "tp_expert_matmul.py").read_text()
LINE = "up = F.silu(h @ self.w_up.to_local().t())"
EXPR = "F.silu(h @ self.w_up.to_local().t())"
HEADER = "import torch\nfrom torch.distributed.tensor import DTensor, Shard, Replicate\n\n"


def _repeat(parts: list[str], size: int, template: str) -> int:
    """Append `template` (formatted with its index i, and j = i + 1) to `parts` until they hold
    `size` characters; returns the count appended."""
    total, i = sum(map(len, parts)), 0
    while total < size:
        part = template.format(i=i, j=i + 1)
        parts.append(part)
        total += len(part)
        i += 1
    return i


def dense(size: int) -> str:
    """Functions of five lines, each a DTP101 (a bare to_local meeting a Shard local)."""
    parts = [HEADER]
    _repeat(parts, size, "def f{i}(x, w, mesh):\n    h = x.to_local()\n    y = h @ w.to_local()\n"
                         "    z = DTensor.from_local(y, mesh, [Shard(0)])\n    return z.to_local() + h\n\n\n")
    return "".join(parts)


def quiet(size: int) -> str:
    """Functions of four lines whose bare to_local()s are low-confidence DTP101s only: at the
    default threshold a run analyses the file once (no finding to position, no fix to complete)."""
    parts = [HEADER]
    _repeat(parts, size, "def g{i}(x, w, mesh):\n    h = x.to_local()\n    y = torch.relu(h) * w\n"
                         "    return DTensor.from_local(y, mesh, [Shard(0)])\n\n\n")
    return "".join(parts)


def long_function(size: int) -> str:
    """One function: `y{i} = y{i-1} @ w.to_local() + x.to_local()`, line after line."""
    parts = [HEADER, "def f(x, w, mesh):\n    y0 = x.to_local()\n"]
    n = _repeat(parts, size, "    y{j} = y{i} @ w.to_local() + x.to_local()\n")
    parts.append(f"    return y{n}\n")
    return "".join(parts)


def nested(kind: str, n: int) -> str:
    """The fixture with the expression of its line 34 nested n deep, `kind` of nesting."""
    forms = {
        "calls": lambda: "g(" * n + EXPR + ")" * n,
        "lists": lambda: "[" * n + EXPR + "]" * n,
        "tuples": lambda: "(" * n + EXPR + ",)" * n,
        "comps": lambda: "[" * n + EXPR + " for a in b]" * n,
        "methods": lambda: EXPR + ".f()" * n,
        "attrs": lambda: EXPR + ".a" * n,
        "subs": lambda: EXPR + "[0]" * n,
        "plus": lambda: EXPR + " + a" * n,
        "ifexp": lambda: (EXPR + " if c else ") * n + EXPR,
        "lambda": lambda: "lambda: " * n + EXPR,
        "not": lambda: "not " * n + EXPR,
    }
    return FIXTURE.replace(LINE, "up = " + forms[kind]())


def elifs(n: int) -> str:
    """The fixture and a function whose `if` has n - 1 `elif`s, each a bare to_local."""
    return FIXTURE + "\n\ndef pick(x, k):\n    if k == 0:\n        y = x.to_local()\n" + "".join(
        f"    elif k == {i}:\n        y = x.to_local() + {i}\n" for i in range(1, n)) + "    return y\n"


def baseline(size: int) -> dict[str, str]:
    return {f"b{i}.py": FIXTURE for i in range(max(1, size // len(FIXTURE)))}


#: run in the child: the CLI, then its own peak RSS (VmHWM) written where HOSTILE_RSS says. (The
#: rusage of a waited child is no good here: Linux counts the parent's RSS at the fork in it.)
_CHILD = (
    "import atexit, os, runpy, sys\n"
    "def peak():\n"
    "    with open('/proc/self/status') as f:\n"
    "        kb = next((int(l.split()[1]) for l in f if l.startswith('VmHWM')), 0)\n"
    "    import resource\n"
    "    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "    with open(os.environ['HOSTILE_RSS'], 'w') as out:\n"
    "        out.write(f'{kb} {worker}')\n"
    "atexit.register(peak)\n"
    "sys.argv = ['placement-lint', *sys.argv[1:]]\n"
    "runpy.run_module('placement_lint', run_name='__main__')\n"
)


def run(files: dict[str, str], args: list[str] = ()) -> tuple[float, str, int, str]:
    """(seconds, peak RSS in MB, exit code, first DTP000 line or last line of output) of one CLI
    run over `files`, in a fresh process (Linux: its peak RSS from /proc; with --jobs, then "/"
    and the largest worker's)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        out_path, rss_path = Path(tmp, ".out"), Path(tmp, ".rss")
        env = {**os.environ, "HOSTILE_RSS": str(rss_path), **({"PYTHONPATH": SRC} if SRC else {})}
        with open(out_path, "wb") as out:
            start = time.perf_counter()
            try:
                code = subprocess.call([sys.executable, "-c", _CHILD, "--no-cache", "--format", "concise", "--jobs",
                                        JOBS, *args, "."], stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                       timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                return TIMEOUT, -1, -1, f"killed after {TIMEOUT} s"
            seconds = time.perf_counter() - start
        own, worker = map(int, rss_path.read_text().split()) if rss_path.exists() else (-1024, -1024)
        rss = f"{own // 1024}" + (f" / {worker // 1024}" if JOBS != "1" else "")
        lines = out_path.read_text(errors="replace").strip().splitlines()
    last = next((ln for ln in lines if "DTP000" in ln), lines[-1] if lines else "")
    return seconds, rss, code, last


def table(title: str, rows: list[tuple[str, int, float, int, int, str]], base: float | None) -> None:
    print(f"\n### {title}\n")
    print("| input | size MB | seconds | s/MB | ratio to baseline s/MB | peak RSS MB | exit | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, size, secs, rss, code, note in rows:
        per = secs / (size / 1e6)
        ratio = f"{per / base:.2f}" if base else ""
        print(f"| {name} | {size / 1e6:.2f} | {secs:.2f} | {per:.1f} | {ratio} | {rss} | {code} | {note[:90]} |")


SHAPES = {
    "dense": (dense, ()),
    "quiet": (quiet, ()),
    "quiet --min-confidence low": (quiet, ("--min-confidence", "low")),
    "long function": (long_function, ()),
}


def scaling(sizes: list[float], shapes: list[str], with_baseline: bool = True) -> None:
    rows = []
    base = None
    for mb in sizes:
        size = int(mb * 1e6)
        if with_baseline:
            files = baseline(size)
            secs, rss, code, note = run(files)
            total = sum(map(len, files.values()))
            rows.append((f"baseline ({len(files)} fixture copies)", total, secs, rss, code, note))
            base = base or secs / (total / 1e6)
        for name in shapes:
            make, args = SHAPES[name]
            text = make(size)
            secs, rss, code, note = run({"big.py": text}, list(args))
            rows.append((name, len(text), secs, rss, code, note))
    table(f"Scaling (one file per row, -j {JOBS})", rows, base)


def deep() -> None:
    base_secs, base_rss, _, _ = run({"fixture.py": FIXTURE})
    rows = [("fixture (baseline)", len(FIXTURE), base_secs, base_rss, 1, "")]
    cases = [("calls", 135), ("calls", 200), ("calls", 250), ("lists", 198), ("tuples", 198), ("comps", 198),
             ("methods", 157), ("methods", 300), ("methods", 330), ("methods", 5000),
             ("attrs", 314), ("attrs", 900), ("subs", 314), ("plus", 314), ("plus", 900), ("plus", 2500),
             ("ifexp", 400), ("ifexp", 500), ("ifexp", 900), ("lambda", 900), ("not", 900)]
    for kind, n in cases:
        text = nested(kind, n)
        secs, rss, code, note = run({"deep.py": text})
        rows.append((f"{kind} x{n}", len(text), secs, rss, code, note))
    for n in (1000, 2900):
        text = elifs(n)
        secs, rss, code, note = run({"deep.py": text})
        rows.append((f"elif x{n}", len(text), secs, rss, code, note))
    print("\n### Deep code (the fixture's line 34 nested; exit 1: its DTP101 found, DTP000 quoted)\n")
    print("| input | seconds | ratio to fixture | peak RSS MB | exit | DTP000 |")
    print("|---|---:|---:|---:|---:|---|")
    for name, _, secs, rss, code, note in rows:
        dtp000 = note.split("DTP000 [high] ", 1)[1] if "DTP000" in note else ""
        print(f"| {name} | {secs:.2f} | {secs / base_secs:.2f} | {rss} | {code} | {dtp000[:110]} |")


def profile(spec: str, mode: str) -> None:
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT))
    from placement_lint.facts import file_facts

    shape, mb = spec.split(":")
    make = {"dense": dense, "quiet": quiet, "long": long_function}[shape]
    data = make(int(float(mb) * 1e6)).encode()
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.runcall(file_facts, data, mode)
    print(f"{shape} {mb} MB, mode {mode!r}: {time.perf_counter() - start:.2f} s (profiled), "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.5,1,2", help="MB of the dense and long-function files")
    parser.add_argument("--big", type=float, default=0, help="also a dense file of this many MB")
    parser.add_argument("--no-deep", action="store_true", help="skip the deep-code table")
    parser.add_argument("--profile", help="SHAPE:MB (dense, quiet, long): cProfile file_facts instead")
    parser.add_argument("--mode", default="", help="facts mode for --profile ('' or positions)")
    parser.add_argument("--src", default="", help="run this source tree of placement-lint (PYTHONPATH)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shapes of the scaling table")
    parser.add_argument("--no-baseline", action="store_true", help="no fixture-copies row per size")
    parser.add_argument("--jobs", default="1", help="the CLI's --jobs (default 1; 0: one per core)")
    args = parser.parse_args()
    global SRC, JOBS
    JOBS = args.jobs
    SRC = os.path.abspath(args.src) if args.src else ""
    if args.profile:
        profile(args.profile, args.mode)
        return
    print(f"placement-lint at {SRC or ROOT}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"--jobs {JOBS}, load {os.getloadavg()[0]:.2f}")
    sizes = [float(s) for s in args.sizes.split(",") if s]
    if sizes:
        scaling(sizes, args.shapes.split(","), with_baseline=not args.no_baseline)
    if args.big:  # (no baseline, no long function: its LibCST parse alone needs ~600 bytes a byte)
        scaling([args.big], ["dense", "quiet", "quiet --min-confidence low"], with_baseline=False)
    if not args.no_deep:
        deep()


if __name__ == "__main__":
    main()
