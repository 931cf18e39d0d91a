"""Command-line interface: `placement-lint [check] PATHS`, `rules`, `explain`, and `confirm`.

Start-up time matters (pre-commit runs this on every commit): nothing heavy is imported at
module level. The engine (and through it LibCST) loads only when `check` runs; `confirm`
(and torch, which it needs) loads only when `confirm` is invoked.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import click

from placement_lint import __version__
from placement_lint.errors import PlacementLintError, UsageError
from placement_lint.reporters import FORMATS

PROG = "placement-lint"

# Subcommands that live elsewhere and are imported on first use:
# name -> (module, attribute, one-line help shown without importing the module).
_LAZY_COMMANDS = {
    "confirm": (
        "placement_lint.runtime.cli",
        "confirm",
        "Run the code on a device mesh and give each finding a runtime verdict.",
    ),
}


def _error(message: str) -> None:
    click.echo(f"{PROG}: error: {message}", err=True)


class _CLI(click.Group):
    """A group whose default subcommand is `check`, with lazily loaded subcommands, that turns
    every user mistake into `placement-lint: error: ...` and exit code 2."""

    def _lazy_available(self, name: str) -> bool:
        module = _LAZY_COMMANDS[name][0]
        # Checked on disk, not by import: listing commands must not import the runtime half.
        return (Path(__file__).parent.parent / (module.replace(".", "/") + ".py")).is_file()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # `placement-lint src/` means `placement-lint check src/`; group options stay the group's.
        group_opts = {opt for p in self.get_params(ctx) for opt in (*p.opts, *p.secondary_opts)}
        if not args or (args[0] not in self.commands and args[0] not in _LAZY_COMMANDS and args[0] not in group_opts):
            args = ["check", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(self.commands) | {n for n in _LAZY_COMMANDS if self._lazy_available(n)}
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = self.commands.get(name)
        if cmd is not None or name not in _LAZY_COMMANDS:
            return cmd
        module, attr, _ = _LAZY_COMMANDS[name]
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ImportError as e:
            hint = "; install it with `pip install 'placement-lint[runtime]'`" if e.name == "torch" else ""
            raise UsageError(f"`{PROG} {name}` is not available in this installation ({e}){hint}") from None
        self.add_command(cmd, name)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
            else:  # lazy: the static one-liner, so --help never imports the runtime checker
                rows.append((name, _LAZY_COMMANDS[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name or PROG, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.UsageError as e:
            _error(e.format_message())
            if e.ctx is not None:
                click.echo(f"Try '{e.ctx.command_path} --help' for help.", err=True)
            code = 2
        except click.ClickException as e:  # e.g. an unreadable --config or --output-file
            _error(e.format_message())
            code = 2
        except PlacementLintError as e:
            _error(str(e))
            code = 2
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted.", err=True)
            code = 130
        except BrokenPipeError:
            # stdout closed early (`placement-lint src | head`): stop quietly, and keep the
            # interpreter from raising again when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = 2
        except Exception:  # a bug in placement-lint, not a user mistake: keep the traceback
            import traceback

            traceback.print_exc()
            _error(
                f"internal error in {PROG} {__version__}; please report this bug with the traceback above "
                "and, if you can, the file that triggered it"
            )
            code = 2
        if standalone_mode:
            sys.exit(code)
        return code


def _split(values: tuple[str, ...]) -> list[str] | None:
    """Repeated and comma-separated flag values as one list; None if the flag was not given."""
    if not values:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@click.group(PROG, cls=_CLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    """Find PyTorch DTensor placement bugs that silently drop gradient collectives.

    `placement-lint PATHS` is short for `placement-lint check PATHS`.
    """


def emit(report, fmt: str, out: str, output_file: Path | None, color: bool = False) -> None:
    """Write the rendered report (to the file, else stdout) and the report's errors to stderr.
    Shared by `check` and `confirm`."""
    from placement_lint import reporters

    if output_file is not None:
        try:
            output_file.write_text(out, encoding="utf-8")
        except OSError as e:
            raise UsageError(f"{output_file}: cannot write: {e.strerror or e}") from None
    elif out:
        click.echo(out, nl=False, color=color)  # else click strips the codes FORCE_COLOR asked for
    errors = reporters.render_errors(report, fmt)
    if errors:
        click.echo(errors, err=True, nl=False)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="Output format.")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the report to this file instead of stdout.")
@click.option("--select", multiple=True, metavar="RULES",
              help="Rules to enable: codes, slugs, prefixes (DTP1) or ALL; comma-separated or repeated. Replaces the config's select.")
@click.option("--extend-select", multiple=True, metavar="RULES", help="Rules to enable on top of select.")
@click.option("--ignore", multiple=True, metavar="RULES", help="Rules to disable. Replaces the config's ignore.")
@click.option("--min-confidence", type=click.Choice(["high", "medium", "low"], case_sensitive=False),
              help="Lowest confidence to report (default: medium).")
@click.option("--exclude", multiple=True, metavar="PATTERNS",
              help="gitignore-style patterns to skip; replaces the default and configured excludes (see --extend-exclude).")
@click.option("--extend-exclude", multiple=True, metavar="PATTERNS", help="Patterns to skip on top of the excludes.")
@click.option("--no-respect-gitignore", is_flag=True, help="Also lint files that .gitignore excludes.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Config file to use (pyproject.toml or placement-lint.toml) instead of searching for one.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="At most N worker processes (small runs use fewer); 0 picks a number from the CPU count.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the analysis cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Where to keep the analysis cache.")
@click.option("--statistics", is_flag=True, help="Show counts per rule instead of the findings.")
@click.option("--show-fixes", is_flag=True, help="Show the fix for each finding that has one (text format).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings.")
@click.option("--only-changed", metavar="REV",
              help="Report only findings on lines changed since git revision REV (for review bots), e.g. origin/main.")
@click.option("--project-root", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Project the given files belong to (default: the nearest directory above them with "
                   "pyproject.toml, placement-lint.toml, setup.cfg, setup.py or .git).")
@click.option("--no-project", is_flag=True,
              help="Given files only: analyse just them, not the project around them.")
@click.option("--write-baseline", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Record the findings of this run in FILE (legacy code to accept for now) and exit 0.")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Report only findings not recorded in FILE (by rule, file, symbol and the flagged code, "
                   "so edits elsewhere keep them matched); stale entries are reported.")
@click.option("--stdin-filename", metavar="PATH",
              help="With PATHS `-`: the source on stdin is the file PATH (analysed in its project; PATH need not exist).")
@click.option("--fix", "do_fix", is_flag=True, help="Apply the safe fixes, then report what is left.")
@click.option("--unsafe-fixes", is_flag=True,
              help="With --fix or --diff: the unsafe fixes too (all of DTP101's: right only if ranks really do "
                   "different work downstream; `confirm --verify-fix` proves that).")
@click.option("--diff", "show_diff", is_flag=True, help="Print the fixes as a unified diff; change no file.")
@click.option("--add-noqa", is_flag=True,
              help="Append `# placement-lint: ignore[CODE]` to every reported line (accept today's findings).")
@click.option("-q", "--quiet", is_flag=True, help="Print findings only: no summary line, no warnings.")
def check(paths: tuple[str, ...], fmt: str, output_file: Path | None, select: tuple[str, ...],
          extend_select: tuple[str, ...], ignore: tuple[str, ...], min_confidence: str | None,
          exclude: tuple[str, ...], extend_exclude: tuple[str, ...], no_respect_gitignore: bool,
          config_path: Path | None, jobs: int, no_cache: bool, cache_dir: Path | None, statistics: bool,
          show_fixes: bool, exit_zero: bool, only_changed: str | None, project_root: Path | None,
          no_project: bool, write_baseline: Path | None, baseline_path: Path | None, stdin_filename: str | None,
          do_fix: bool, unsafe_fixes: bool, show_diff: bool, add_noqa: bool, quiet: bool) -> int:
    """Lint PATHS (files or directories; default: the current directory).

    Given files only (pre-commit, an editor), the project around them is analysed and the
    findings located in or caused by them are reported (see --project-root, --no-project)."""
    from placement_lint import engine, reporters

    # the collector paused through the report too: rendering a big file's findings allocates
    # millions of strings while the findings are alive (engine.collector_paused says why)
    click.get_current_context().with_resource(engine.collector_paused())
    from placement_lint.config import load_config

    overrides = {
        "select": _split(select),
        "extend_select": _split(extend_select),
        "ignore": _split(ignore),
        "exclude": _split(exclude),
        "extend_exclude": _split(extend_exclude),
        "min_confidence": min_confidence,
        "respect_gitignore": False if no_respect_gitignore else None,
    }
    config = load_config(Path.cwd(), config_path, overrides)
    overlay = None
    if "-" in paths:
        if len(paths) > 1:
            raise UsageError("`-` (stdin) must be the only PATH")
        name = stdin_filename or "stdin.py"
        overlay = {name: sys.stdin.buffer.read()}
        paths = (name,)
    elif stdin_filename is not None:
        raise UsageError("--stdin-filename needs PATHS `-` (the source on stdin)")
    targets, scope = list(paths) or ["."], None
    if paths and not no_project and all(os.path.isfile(p) or (overlay and p in overlay) for p in paths):
        from placement_lint.project import project_targets

        targets, scope = project_targets(list(paths), Path.cwd(), project_root)
    elif project_root is not None:
        raise UsageError("--project-root applies when PATHS are files (the files of a commit, an editor's buffer)")
    if write_baseline is not None and baseline_path is not None:
        raise UsageError("--write-baseline and --baseline cannot be combined")
    if sum((do_fix, show_diff, add_noqa)) > 1:
        raise UsageError("--fix, --diff and --add-noqa cannot be combined")
    if unsafe_fixes and not (do_fix or show_diff):
        raise UsageError("--unsafe-fixes needs --fix or --diff")
    if (do_fix or show_diff or add_noqa) and overlay is not None:
        raise UsageError("fixes change files: not with `-` (stdin)")
    entries = None
    if baseline_path is not None:
        from placement_lint.fingerprint import read_baseline

        entries = read_baseline(baseline_path)  # before the run: a bad file costs no analysis
    def lint_given():
        rep = engine.lint(targets, config, jobs=jobs or None, use_cache=not no_cache, cache_dir=cache_dir,
                          overlay=overlay)
        if scope is not None:
            scope.restrict(rep)
        return rep

    changed: list = []  # --only-changed's lines, read from git once (before any fix)

    def report_only(rep, warn_stale: bool) -> None:
        """The baseline's and --only-changed's filters (the whole project is still analysed)."""
        if entries is not None:
            from placement_lint.fingerprint import apply_baseline

            rep.findings, stale = apply_baseline(rep.findings, entries)
            if warn_stale and stale and not quiet and scope is None and not only_changed:
                shown = ", ".join(f"{e.get('code')} {e.get('path')} {e.get('symbol') or ''}".rstrip() for e in stale[:5])
                click.echo(f"{PROG}: warning: {len(stale)} baseline entr{'y' if len(stale) == 1 else 'ies'} matched no "
                           f"finding (fixed, or the flagged code changed): {shown}{', ...' if len(stale) > 5 else ''}; "
                           f"rewrite it with --write-baseline", err=True)
        if only_changed:
            from placement_lint.changed import changed_lines, keep

            if not changed:
                changed.append(changed_lines(only_changed, Path.cwd()))
            rep.findings = [f for f in rep.findings if keep(changed[0], f)]

    report = lint_given()
    if write_baseline is not None:
        from placement_lint.fingerprint import write_baseline as write

        n = write(write_baseline, report.findings)
        if not quiet:
            click.echo(f"{PROG}: wrote {n} finding(s) to the baseline {write_baseline}", err=True)
        import dataclasses

        accepted = dataclasses.replace(report, findings=[])
        emit(accepted, fmt, reporters.render(accepted, fmt), output_file)
        return 2 if report.errors else 0
    report_only(report, warn_stale=True)

    if do_fix or show_diff or add_noqa:
        from placement_lint import fixes

        changes = fixes.noqa_changes(report.findings) if add_noqa else fixes.plan(report.findings, unsafe_fixes)
        if show_diff:
            click.echo(fixes.diff(changes), nl=False)
            if not quiet:
                n = sum(c[2] for c in changes.values())
                click.echo(f"{PROG}: {n} fix(es) would change {len(changes)} file(s)"
                           + ("" if unsafe_fixes or n or not any((f.fix or {}).get("edits") for f in report.findings)
                              else " (the fixes available are unsafe: --unsafe-fixes)"), err=True)
            return 1 if changes else (2 if report.errors else 0)
        for path, (_old, new, _n) in changes.items():
            fixes.write_atomic(path, new)
        if not quiet:
            what = "suppression(s) added" if add_noqa else "fix(es) applied"
            click.echo(f"{PROG}: {sum(c[2] for c in changes.values())} {what} in {len(changes)} file(s)", err=True)
        if changes:  # what is left, as the fixed files now read
            report = lint_given()
            report_only(report, warn_stale=False)

    color = (
        fmt in ("text", "concise")
        and not statistics
        and output_file is None
        and "NO_COLOR" not in os.environ
        and (bool(os.environ.get("FORCE_COLOR")) or sys.stdout.isatty())
    )
    if statistics:
        out = reporters.render_statistics(report, "json" if fmt == "json" else "text")
    else:
        # --quiet drops the summary: what is left of the text format is the concise one
        out = reporters.render(report, "concise" if quiet and fmt == "text" else fmt, show_fixes=show_fixes, color=color)
    emit(report, fmt, out, output_file, color)
    if report.files_seen == 0 and not report.errors and not quiet:
        click.echo(f"{PROG}: warning: no Python files found under {', '.join(paths) or '.'}", err=True)
    if report.errors:
        return 2
    return 1 if report.findings and not exit_zero else 0


@cli.command("rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def rules_cmd(fmt: str) -> int:
    """List the rules: code, slug, fix availability, summary."""
    from placement_lint.rule import all_rules

    rows = [
        {"code": r.CODE, "slug": r.SLUG, "fix": r.FIX, "summary": getattr(r, "SUMMARY", "")}
        for r in all_rules()
    ]
    if fmt == "json":
        import json

        click.echo(json.dumps(rows, indent=2))
        return 0
    header = {"code": "CODE", "slug": "SLUG", "fix": "FIX", "summary": "SUMMARY"}
    table = [header] + [{**row, "fix": row["fix"] or "-"} for row in rows]
    wc = max(len(r["code"]) for r in table)
    ws = max(len(r["slug"]) for r in table)
    wf = max(len(r["fix"]) for r in table)
    for r in table:
        click.echo(f"{r['code']:<{wc}}  {r['slug']:<{ws}}  {r['fix']:<{wf}}  {r['summary']}".rstrip())
    return 0


def _indent(text: str, prefix: str = "    ") -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


@cli.command()
@click.argument("rule")
def explain(rule: str) -> int:
    """Explain a rule (by code or slug), with examples it flags and does not flag."""
    import difflib

    from placement_lint.rule import all_rules, lookup

    found = lookup(rule)
    if found is None:
        names = [r.CODE for r in all_rules()] + [r.SLUG for r in all_rules()]
        close = difflib.get_close_matches(rule.strip(), names, n=1) or difflib.get_close_matches(
            rule.strip().upper(), names, n=1
        )
        hint = f" (did you mean {close[0]!r}?)" if close else " (see `placement-lint rules`)"
        raise UsageError(f"unknown rule {rule!r}{hint}")
    parts = [f"{found.CODE} ({found.SLUG})", f"Fix: {found.FIX or 'none'}", "", found.doc()]
    for title, examples in (("Examples flagged:", found.INVALID), ("Examples not flagged:", found.VALID)):
        if not examples:
            continue
        parts += ["", title]
        for example in examples:
            if example.note:
                parts += ["", f"  {example.note}"]
            for name, source in example.files().items():
                parts += ["", f"  # {name}", _indent(source).rstrip("\n")]
    click.echo("\n".join(parts))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; exits with 0 (clean), 1 (findings) or 2 (error)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name=PROG)


if __name__ == "__main__":  # pragma: no cover
    main()
