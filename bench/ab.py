"""Interleaved A/B of the whole-tree cold run against a baseline revision and ruff.

    .venv/bin/python bench/ab.py [--base REV] [--rounds N] [--tree DIR] [--cpus 0,1]

Each round runs, one after another in fresh processes: placement-lint at `--base` (a `git
archive` snapshot), placement-lint at HEAD (snapshot too, so uncommitted edits are not measured)
and `ruff check --no-cache`, all on the same tree (default: the installed torch's `torch/`,
found without importing torch) with `--no-cache`. Interleaving puts all three under the same
machine load; the table gives medians and the per-round ratios to ruff. `--cpus` pins every run
with taskset (e.g. `0,1` to measure a 2-core budget on a bigger machine). Standard library only;
ruff is looked up next to this Python, then on PATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: runs the CLI of the snapshot given as the first argument, not the installed (editable) package
DRIVER = """
import sys
root = sys.argv.pop(1)
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__
                    and "editable" not in getattr(f, "__name__", "")]
sys.path.insert(0, root)
import placement_lint
assert placement_lint.__file__.startswith(root), placement_lint.__file__
from placement_lint.cli import main
main()
"""


def snapshot(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    data = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    archive = into.with_suffix(".tar")
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="786807f", help="baseline revision (default: before issue 8's last speed work)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tree", type=Path, help="tree to lint (default: the installed torch/)")
    ap.add_argument("--cpus", help="pin every run to these CPUs (taskset -c)")
    args = ap.parse_args()
    tree = args.tree
    if tree is None:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.origin:
            ap.error("torch is not installed here: pass --tree")
        tree = Path(spec.origin).parent
    ruff = shutil.which("ruff", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if ruff is None:
        ap.error("ruff not found (pip install ruff)")
    pin = ["taskset", "-c", args.cpus] if args.cpus else []
    with tempfile.TemporaryDirectory(prefix="placement-lint-ab-") as tmp:
        driver = Path(tmp) / "driver.py"
        driver.write_text(DRIVER)
        base, head = snapshot(args.base, Path(tmp) / "base"), snapshot("HEAD", Path(tmp) / "head")
        lint = [sys.executable, str(driver)]
        cmds = {
            "base": pin + lint + [str(base), str(tree), "--no-cache", "--exit-zero"],
            "head": pin + lint + [str(head), str(tree), "--no-cache", "--exit-zero"],
            "ruff": pin + [ruff, "check", "--no-cache", "-q", "--exit-zero", str(tree)],
        }
        for name, cmd in cmds.items():  # warm the page cache; a broken command stops here
            proc = subprocess.run(cmd, capture_output=True)
            if proc.returncode != 0:
                print(f"{name} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}", file=sys.stderr)
                return 2
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                t = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t)
    print(f"tree {tree}, base {args.base}, {args.rounds} rounds, load {os.getloadavg()[0]:.2f} at the end")
    print("| run | median s | per round |\n|---|---|---|")
    for name, v in times.items():
        print(f"| {name} | {statistics.median(v):.3f} | {' '.join(f'{x:.2f}' for x in v)} |")
    for name in ("base", "head"):
        ratios = [a / b for a, b in zip(times[name], times["ruff"])]
        print(f"| {name} / ruff | **{statistics.median(ratios):.2f}** | {' '.join(f'{x:.2f}' for x in ratios)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
