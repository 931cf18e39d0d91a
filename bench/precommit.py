"""The pre-commit hook on a 5,000-file repository: one staged file, warm and cold.

    .venv/bin/python bench/precommit.py [--files 5000] [--repeat 5]

Builds a repository in a temp dir (the installed torch's .py/.pyi files, found without importing
torch, plus fixtures/ and one-function filler modules up to --files), then times, as fresh
processes, `placement-lint FILE` (the hook's command line for a one-file commit: the project
around FILE is analysed, see placement_lint/project.py) against a full run of the repository in
the same invocation:

  full cold      placement-lint .          empty cache
  hook cold      placement-lint FILE       empty cache
  full warm      placement-lint .          cache of a previous run
  hook warm      placement-lint FILE       cache of a previous run

Targets (issue 10): hook warm under 0.3 s; hook cold no worse than full cold. FILE is the
fixture style's hook file: its finding is at the use site in another file, so the run must see
the project to report it (checked).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "placement_lint"]
HOOK_FILE = "fixtures/moe_router/styles.py"


def build(dest: Path, n_files: int) -> int:
    spec = importlib.util.find_spec("torch")
    torch_dir = Path(spec.origin).parent if spec and spec.origin else None
    n = 0
    if torch_dir is not None:
        for src in torch_dir.rglob("*.py*"):
            if src.suffix in (".py", ".pyi") and n < n_files - 200:
                out = dest / "torch" / src.relative_to(torch_dir)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out)
                n += 1
    shutil.copytree(ROOT / "fixtures", dest / "fixtures", ignore=shutil.ignore_patterns("__pycache__"))
    n += sum(1 for _ in (dest / "fixtures").rglob("*.py"))
    i = 0
    while n < n_files:
        d = dest / "filler" / f"m{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text(f"import torch\n\n\ndef f{i}(x):\n    return torch.relu(x) + {i}\n")
        i += 1
        n += 1
    (dest / "pyproject.toml").write_text("[project]\nname = 'big'\n")
    return n


def timed(args: list[str], cwd: Path, cache: Path) -> tuple[float, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    proc = subprocess.run([*EXE, *args, "--cache-dir", str(cache), "-q", "--format", "concise"], cwd=cwd,
                          capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"placement-lint failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dt, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pl-precommit-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        n = build(repo, args.files)
        subprocess.run([*EXE, "--version"], capture_output=True)  # compile the package once
        rows: dict[str, list[float]] = {k: [] for k in ("full cold", "hook cold", "full warm", "hook warm")}
        out = ""
        for r in range(args.repeat):
            for kind, target in (("full", "."), ("hook", HOOK_FILE)):
                cache = Path(tmp) / f"cache-{kind}-{r}"
                dt, out_cold = timed([target], repo, cache)
                rows[f"{kind} cold"].append(dt)
                dt, out = timed([target], repo, cache)
                rows[f"{kind} warm"].append(dt)
                if kind == "hook" and "moe_router/model.py" not in out:
                    raise SystemExit(f"the hook run missed the cross-file finding:\n{out}")
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"repository: {n} Python files; hook file {HOOK_FILE}; {args.repeat} rounds; medians (min-max)\n")
        print("| run | s | vs full run, same state |")
        print("|---|---|---|")
        for k, v in rows.items():
            base = med["full cold"] if "cold" in k else med["full warm"]
            print(f"| {k} | {med[k]:.3f} ({min(v):.3f}-{max(v):.3f}) | {med[k] / base:.2f}x |")
        print(f"\nhook warm < 0.3 s: {'met' if med['hook warm'] < 0.3 else 'MISSED'}; "
              f"hook cold <= full cold: {'met' if med['hook cold'] <= med['full cold'] * 1.05 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
