"""`python -m placement_lint.github_action`: what the GitHub Action (`action.yml`) runs.

    python -m placement_lint.github_action [--base REV] [--format github|sarif]
        [--sarif-file FILE] [--min-confidence LEVEL] [PATHS...]

The whole project is analysed (cross-file findings stay right); the findings the pull request is
responsible for (a changed line in the finding's range or in one of its related locations, see
changed.keep) become workflow annotations, and every other finding goes to the job summary
(`$GITHUB_STEP_SUMMARY`) so that legacy findings are visible without failing the check. With
`--format sarif` every finding is written to FILE for code scanning as well. Exit 1 when the
change has findings, 2 on errors, else 0. The base defaults to the pull request's base branch
(`origin/$GITHUB_BASE_REF`), compared from its merge base with HEAD when the history allows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from placement_lint.errors import PlacementLintError

PROG = "placement-lint"


def _merge_base(base: str, cwd: Path) -> str:
    res = subprocess.run(["git", "merge-base", base, "HEAD"], cwd=cwd, capture_output=True, text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else base


def _summary(mine: list, rest: list, base: str) -> str:
    def rows(findings):
        out = ["| location | rule | confidence | message |", "|---|---|---|---|"]
        for f in findings:
            msg = f.message.replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{f.path}:{f.line}` | {f.code} | {f.confidence} | {msg[:300]} |")
        return out

    parts = [f"## {PROG}", "", f"{len(mine)} finding(s) on lines this change touched (annotated), "
             f"{len(rest)} elsewhere in the project (compared with `{base}`)."]
    if mine:
        parts += ["", "### On changed lines", "", *rows(mine)]
    if rest:
        parts += ["", "### Elsewhere (not caused by this change)", "", *rows(rest)]
    return "\n".join(parts) + "\n"


def run(argv: list[str] | None = None) -> int:
    from placement_lint import engine, reporters
    from placement_lint.changed import changed_lines, keep
    from placement_lint.config import load_config

    ap = argparse.ArgumentParser(prog="python -m placement_lint.github_action")
    ap.add_argument("paths", nargs="*", default=["."])
    ap.add_argument("--base", default="", help="revision to compare with (default: origin/$GITHUB_BASE_REF)")
    ap.add_argument("--format", choices=("github", "sarif"), default="github")
    ap.add_argument("--sarif-file", default="placement-lint.sarif")
    ap.add_argument("--min-confidence", choices=("high", "medium", "low"))
    args = ap.parse_args(argv)
    cwd = Path.cwd()
    base = args.base or (f"origin/{os.environ['GITHUB_BASE_REF']}" if os.environ.get("GITHUB_BASE_REF") else "")
    if not base:
        raise PlacementLintError("no base revision: pass --base (the action's `base` input) or run on a pull "
                                 "request, where GITHUB_BASE_REF names the base branch")
    config = load_config(cwd, None, {"min_confidence": args.min_confidence})
    report = engine.lint(args.paths, config)
    changed = changed_lines(_merge_base(base, cwd), cwd)
    mine = [f for f in report.findings if keep(changed, f)]
    rest = [f for f in report.findings if not keep(changed, f)]
    sys.stdout.write(reporters.render(dataclasses.replace(report, findings=mine), "github"))
    if args.format == "sarif":
        Path(args.sarif_file).write_text(reporters.render(report, "sarif"))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    text = _summary(mine, rest, base)
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stderr.write(text)
    for e in report.errors:
        sys.stderr.write(f"{PROG}: error: {e.get('path')}: {e.get('message')}\n")
    if report.errors:
        return 2
    return 1 if mine else 0


def main() -> None:
    try:
        sys.exit(run())
    except PlacementLintError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
