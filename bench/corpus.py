"""Re-run the real-code precision review of docs/corpus.md: placement-lint on third-party corpora.

    python3 bench/corpus.py run  --corpus-root /tmp/corpus --out DIR [--src TREE] [--python PY] [--torch DIR]
    python3 bench/corpus.py report DIR
    python3 bench/corpus.py diff OLD_DIR NEW_DIR

`run` lints every corpus of CORPORA below with
`--min-confidence low --format json --no-cache --exit-zero`, saves the JSON per corpus as
DIR/<name>.json (plus DIR/meta.json: engine tree, revision, corpus roots, wall times) and prints
one markdown table per corpus (rule x high/medium/low) and a totals table. `report` prints the
same tables from a saved DIR. `diff` prints, per corpus, the findings at medium or above that
are new or gone, the confidence changes of the same finding, and the change in low findings.
A finding is identified by (path relative to its corpus root, line, column, code).

The engine: `--src TREE` is a source tree of placement-lint (a `git worktree` of a baseline
revision, or the working tree), run by `--python` (a Python with libcst, e.g. the project
venv) from an empty directory, so no pyproject.toml above it changes the configuration. The
project's editable install maps `placement_lint.rules` to the *working tree's* `rules/` even
when `placement_lint` itself is imported from another tree; the child therefore drops that
import hook first, and `placement_lint.rule._rules_package` then loads `rules/` beside the
package, as it does in a source checkout. `run` checks both paths before linting.

Corpora (docs/corpus.md section 1) are wheels unzipped as source only under --corpus-root
(nothing installed or executed):

    pip download --no-deps -d /tmp/dl 'torchtitan==0.3.0' 'nemo_automodel==0.7.0' 'torchao==0.18.0' \\
        'torchtune==0.6.1' 'xtuner==0.2.0' 'accelerate==1.15.0'
    for w in /tmp/dl/*.whl; do n=$(basename "$w"); n=${n%%-*}
      unzip -q -o "$w" '*.py' '*.pyi' -d /tmp/corpus/$n; done

plus torch's own `torch/distributed/`, taken from the installed torch (--torch, default: found
by --python without importing torch). Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (root, paths under root, what it is). Root "@torch" is the installed torch package
#: directory (--torch); any other root is relative to --corpus-root. Findings print relative
#: to the root.
CORPORA: dict[str, tuple[str, tuple[str, ...], str]] = {
    "torch.distributed": ("@torch", ("distributed",), "torch 2.13.0 (the venv's)"),
    "torchtitan": ("torchtitan", ("torchtitan", "torchtitan_recipes"), "torchtitan 0.3.0 wheel"),
    "nemo_automodel": ("nemo_automodel", ("nemo_automodel",), "nemo_automodel 0.7.0 wheel"),
    "torchao": ("torchao", ("torchao", "test"), "torchao 0.18.0 wheel"),
    "torchtune": ("torchtune", ("torchtune", "recipes"), "torchtune 0.6.1 wheel"),
    "xtuner": ("xtuner", ("xtuner",), "xtuner 0.2.0 wheel"),
    "accelerate": ("accelerate", ("accelerate",), "accelerate 1.15.0 wheel"),
}

LINT_ARGS = ("--min-confidence", "low", "--format", "json", "--no-cache", "--exit-zero")
LEVELS = ("high", "medium", "low")
#: the static rules, always shown as table rows (other codes, e.g. DTP000, appear when seen)
STATIC_RULES = ("DTP101", "DTP102", "DTP103", "DTP201")

# Run in the child: import placement_lint from SRC, never through the editable install's hook.
BOOTSTRAP = r"""
import sys, runpy
src = sys.argv[1]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(type(f), "__module__", "")
                    and "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
sys.path.insert(0, src)
if sys.argv[2] == "--probe":
    import placement_lint, placement_lint.rule as r
    print(placement_lint.__file__)
    print(r._rules_package().__file__)
else:
    sys.argv = ["placement-lint", *sys.argv[2:]]
    runpy.run_module("placement_lint", run_name="__main__", alter_sys=True)
"""


# -- helpers -----------------------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    return env


def find_torch(python: str) -> Path | None:
    code = ("import importlib.util as u; s = u.find_spec('torch'); "
            "print(list(s.submodule_search_locations)[0] if s else '')")
    out = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True, env=child_env())
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def torch_version(torch_dir: Path) -> str:
    for d in sorted(torch_dir.parent.glob("torch-*.dist-info")):
        return d.name[len("torch-"):-len(".dist-info")]
    return "?"


def git(src: Path, *cmd: str) -> str:
    out = subprocess.run(["git", "-C", str(src), *cmd], check=False, capture_output=True, text=True)
    return out.stdout.rstrip("\n") if out.returncode == 0 else ""  # keep porcelain's leading blanks


def rel(path: str, root: str) -> str:
    try:
        r = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if r.startswith("..") else r


def load_dir(d: Path) -> tuple[dict, dict[str, dict]]:
    meta_p = d / "meta.json"
    meta = json.loads(meta_p.read_text()) if meta_p.is_file() else {}
    data = {}
    for name in CORPORA:
        p = d / f"{name}.json"
        if p.is_file():
            try:
                data[name] = json.loads(p.read_text())
            except json.JSONDecodeError:
                pass
    return meta, data


def root_of(meta: dict, name: str) -> str:
    return meta.get("roots", {}).get(name, "/")


# -- tables ------------------------------------------------------------------------------------------

def rule_table(name: str, data: dict, desc: str = "", root: str = "/") -> str:
    counts = Counter((f["code"], f["confidence"]) for f in data.get("findings", []))
    codes = sorted(set(STATIC_RULES) | {c for c, _ in counts})
    st = data.get("stats", {})
    head = f"**{name}**" + (f" ({desc})" if desc else "") + f": {st.get('seconds', '?')} s, `--no-cache`"
    lines = [head, "", "| rule | high | medium | low | total |", "|---|---|---|---|---|"]
    tot = Counter()
    for c in codes:
        row = [counts[(c, lv)] for lv in LEVELS]
        for lv, n in zip(LEVELS, row):
            tot[lv] += n
        lines.append(f"| {c} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    lines.append("| **total** | " + " | ".join(f"**{tot[lv]}**" for lv in LEVELS) + f" | **{sum(tot.values())}** |")
    above = sorted((rel(f["path"], root), f["line"], f["column"], f["code"], f["confidence"], f["message"])
                   for f in data.get("findings", []) if f["confidence"] in ("high", "medium"))
    if above:
        lines += ["", "medium and above:"]
        lines += [f"- `{p}:{ln}:{col}` {code} {conf}: {' '.join(msg.split())[:120]}" for p, ln, col, code, conf, msg in above]
    return "\n".join(lines)


def totals_table(data: dict[str, dict], meta: dict) -> str:
    lines = ["| corpus | files seen | parsed | seconds | wall s | high | medium | low | errors | DTP000 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    walls = meta.get("wall_s", {})
    for name, d in data.items():
        st = d.get("stats", {})
        c = Counter(f["confidence"] for f in d.get("findings", []))
        dtp000 = sum(1 for f in d.get("findings", []) if f["code"] == "DTP000")
        wall = walls.get(name)
        lines.append(f"| {name} | {st.get('files_seen', '?')} | {st.get('files_parsed', '?')} | {st.get('seconds', '?')} | "
                     f"{f'{wall:.2f}' if wall is not None else '?'} | {c['high']} | {c['medium']} | {c['low']} | "
                     f"{len(d.get('errors', []))} | {dtp000} |")
    return "\n".join(lines)


def print_report(meta: dict, data: dict[str, dict]) -> None:
    if meta:
        print(f"engine: {meta.get('engine', '?')}; python {meta.get('python', '?')}; torch {meta.get('torch_version', '?')}; "
              f"{meta.get('date', '')}\n")
    for name, d in data.items():
        print(rule_table(name, d, CORPORA[name][2], root_of(meta, name)))
        print()
    print("**Totals**\n")
    print(totals_table(data, meta))
    odd = []
    for name, d in data.items():
        for e in d.get("errors", []):
            odd.append(f"{name}: error {json.dumps(e)[:300]}")
        for f in d.get("findings", []):
            if f["code"] == "DTP000":
                odd.append(f"{name}: DTP000 {rel(f['path'], root_of(meta, name))}:{f['line']} {f['message'][:120]}")
    for name, msg in meta.get("failures", {}).items():
        odd.append(f"{name}: run failed: {msg}")
    if odd:
        print("\nErrors / DTP000:\n" + "\n".join("  " + o for o in odd))


# -- run ---------------------------------------------------------------------------------------------

def cmd_run(a: argparse.Namespace) -> int:
    src = Path(a.src).resolve()
    python = a.python
    if not (src / "placement_lint" / "__init__.py").is_file():
        sys.exit(f"corpus: {src} has no placement_lint/ package")
    torch_dir = Path(a.torch).resolve() if a.torch else find_torch(python)
    names = a.only or list(CORPORA)
    for n in names:
        if n not in CORPORA:
            sys.exit(f"corpus: unknown corpus {n!r} (known: {', '.join(CORPORA)})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cwd = Path(tempfile.mkdtemp(prefix="pl-corpus-cwd-"))  # no config file above it

    probe = subprocess.run([python, "-c", BOOTSTRAP, str(src), "--probe"], check=False, capture_output=True, text=True,
                           env=child_env(), cwd=cwd)
    where = probe.stdout.split()
    if probe.returncode != 0 or len(where) != 2 or not all(w.startswith(str(src) + os.sep) for w in where):
        sys.exit(f"corpus: the child does not import placement_lint and its rules from {src}: {where} {probe.stderr[-500:]}")
    sha = git(src, "rev-parse", "HEAD")
    dirty = [line[3:] for line in git(src, "status", "--porcelain", "--", "placement_lint", "rules").splitlines()]
    engine = f"{src} at {sha[:10] or '?'}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean)")
    print(f"corpus: engine {engine}; placement_lint from {where[0]}, rules from {where[1]}", file=sys.stderr)

    meta = {"engine": engine, "src": str(src), "revision": sha, "dirty": dirty, "python": python,
            "placement_lint_file": where[0], "rules_file": where[1],
            "torch_dir": str(torch_dir) if torch_dir else None,
            "torch_version": torch_version(torch_dir) if torch_dir else "?",
            "corpus_root": str(Path(a.corpus_root).resolve()), "args": list(LINT_ARGS) + (["--jobs", str(a.jobs)] if a.jobs else []),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "roots": {}, "wall_s": {}, "failures": {}}
    data: dict[str, dict] = {}
    for name in names:
        root_s, paths, _ = CORPORA[name]
        if root_s == "@torch":
            if torch_dir is None:
                print(f"corpus: {name}: torch not found (pass --torch)", file=sys.stderr)
                continue
            root = torch_dir
        else:
            root = Path(a.corpus_root).resolve() / root_s
        targets = [root / p for p in paths]
        missing = [str(t) for t in targets if not t.exists()]
        if missing:
            print(f"corpus: {name}: skipped, missing {', '.join(missing)}", file=sys.stderr)
            meta["failures"][name] = "missing " + ", ".join(missing)
            continue
        cmd = [python, "-c", BOOTSTRAP, str(src), *map(str, targets), *LINT_ARGS]
        if a.jobs:
            cmd += ["--jobs", str(a.jobs)]
        print(f"corpus: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=child_env(), cwd=cwd)
        wall = time.perf_counter() - t0
        meta["roots"][name] = str(root)
        meta["wall_s"][name] = round(wall, 3)
        (out / f"{name}.json").write_text(proc.stdout)
        if proc.stderr.strip():
            (out / f"{name}.stderr").write_text(proc.stderr)
        try:
            data[name] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            meta["failures"][name] = f"rc {proc.returncode}, no JSON: {proc.stderr.strip()[-300:]}"
            print(f"corpus: {name}: {meta['failures'][name]}", file=sys.stderr)
            continue
        if proc.returncode != 0:
            meta["failures"][name] = f"rc {proc.returncode}: {proc.stderr.strip()[-300:]}"
        print(f"corpus: {name}: {len(data[name].get('findings', []))} findings, {wall:.1f} s", file=sys.stderr)
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print_report(meta, data)
    return 1 if meta["failures"] else 0


def cmd_report(a: argparse.Namespace) -> int:
    meta, data = load_dir(Path(a.dir))
    if not data:
        sys.exit(f"corpus: no corpus JSON in {a.dir}")
    print_report(meta, data)
    return 0


# -- diff --------------------------------------------------------------------------------------------

RANK = {"high": 0, "medium": 1, "low": 2}


def keyed(d: dict, root: str) -> dict[tuple, dict]:
    """Findings by (relative path, line, column, code); repeats of one key get a suffix 1, 2, ..."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f in d.get("findings", []):
        groups[(rel(f["path"], root), f["line"], f["column"], f["code"])].append(f)
    out = {}
    for k, fs in groups.items():
        fs.sort(key=lambda f: (RANK.get(f["confidence"], 9), f["message"]))
        for i, f in enumerate(fs):
            out[(*k, i)] = f
    return out


def fmt(k: tuple, f: dict, conf: str | None = None) -> str:
    dup = f" #{k[4] + 1}" if k[4] else ""
    msg = " ".join(f["message"].split())[:120]
    return f"{k[0]}:{k[1]}:{k[2]} {k[3]}{dup} {conf or f['confidence']}  {msg}"


def cmd_diff(a: argparse.Namespace) -> int:
    old_meta, old = load_dir(Path(a.old))
    new_meta, new = load_dir(Path(a.new))
    print(f"old: {old_meta.get('engine', a.old)}\nnew: {new_meta.get('engine', a.new)}\n")
    changed_any = False
    for name in CORPORA:
        if name not in old and name not in new:
            continue
        print(f"## {name}")
        if name not in old or name not in new:
            print(f"only in {'new' if name in new else 'old'}\n")
            continue
        ko = keyed(old[name], root_of(old_meta, name))
        kn = keyed(new[name], root_of(new_meta, name))
        high_new = [k for k in kn if k not in ko and RANK[kn[k]["confidence"]] <= 1]
        high_gone = [k for k in ko if k not in kn and RANK[ko[k]["confidence"]] <= 1]
        conf = [k for k in ko if k in kn and ko[k]["confidence"] != kn[k]["confidence"]]
        msg = [k for k in ko if k in kn and ko[k]["confidence"] == kn[k]["confidence"] and ko[k]["message"] != kn[k]["message"]]
        lo_o = sum(1 for f in ko.values() if f["confidence"] == "low")
        lo_n = sum(1 for f in kn.values() if f["confidence"] == "low")
        lo_new = sum(1 for k, f in kn.items() if k not in ko and f["confidence"] == "low")
        lo_gone = sum(1 for k, f in ko.items() if k not in kn and f["confidence"] == "low")
        so, sn = old[name].get("stats", {}), new[name].get("stats", {})
        for k in sorted(high_new):
            print("+ " + fmt(k, kn[k]))
        for k in sorted(high_gone):
            print("- " + fmt(k, ko[k]))
        for k in sorted(conf):
            print(f"~ {fmt(k, kn[k], ko[k]['confidence'] + ' -> ' + kn[k]['confidence'])}")
        print(f"medium+: {len(high_new)} new, {len(high_gone)} gone, {len(conf)} confidence changes"
              + (f", {len(msg)} message changes (same key and confidence)" if msg else ""))
        print(f"low: {lo_o} -> {lo_n} ({lo_n - lo_o:+d}; {lo_new} new, {lo_gone} gone by key)")
        if (so.get("files_seen"), so.get("files_parsed")) != (sn.get("files_seen"), sn.get("files_parsed")):
            print(f"files seen/parsed: {so.get('files_seen')}/{so.get('files_parsed')} -> {sn.get('files_seen')}/{sn.get('files_parsed')}")
        eo, en = len(old[name].get("errors", [])), len(new[name].get("errors", []))
        if eo or en:
            print(f"errors: {eo} -> {en}")
        print(f"seconds: {so.get('seconds')} -> {sn.get('seconds')}\n")
        changed_any |= bool(high_new or high_gone or conf or lo_new or lo_gone)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n\n")[1:]))
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="lint every corpus, save the JSON, print the tables")
    r.add_argument("--corpus-root", default="/tmp/corpus", help="where the wheels are unzipped (default /tmp/corpus)")
    r.add_argument("--torch", help="the installed torch package directory (default: found by --python)")
    r.add_argument("--src", default=str(ROOT), help="placement-lint source tree to run (default: this checkout)")
    r.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                   help="Python to run it with (default: this checkout's .venv)")
    r.add_argument("--out", required=True, help="directory for <corpus>.json and meta.json")
    r.add_argument("--only", action="append", metavar="NAME", help="run only this corpus (repeatable)")
    r.add_argument("--jobs", type=int, help="pass --jobs N to placement-lint (default: its own)")
    r.set_defaults(fn=cmd_run)
    p = sub.add_parser("report", help="print the tables of a saved run")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_report)
    d = sub.add_parser("diff", help="new / gone findings between two saved runs")
    d.add_argument("old")
    d.add_argument("new")
    d.set_defaults(fn=cmd_diff)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
