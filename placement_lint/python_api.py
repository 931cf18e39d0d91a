"""The Python API: lint from a program (an editor plugin, a notebook, a test) instead of the CLI.

    import placement_lint
    findings = placement_lint.lint_paths(["src/"])                      # list[Finding]
    findings = placement_lint.lint_source(text, "src/model/parallel.py")  # an unsaved buffer

Both use the configuration the CLI would (pyproject.toml / placement-lint.toml found from
`cwd`), the analysis cache, and the same rules; `lint_source` analyses `text` as the file `path`
in its project (the path need not exist), like `placement-lint - --stdin-filename PATH`.
Problems of the run itself (an unreadable file, a bad config) raise `PlacementLintError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from placement_lint.errors import PlacementLintError
from placement_lint.findings import Finding


def _config(cwd: Path, overrides: dict[str, Any]):
    from placement_lint.config import load_config

    return load_config(cwd, None, {k: v for k, v in overrides.items() if v is not None})


def _run(targets: list[str], given: list[str] | None, cwd: Path, overlay: dict[str, bytes] | None,
         use_cache: bool, options: dict[str, Any]) -> list[Finding]:
    from placement_lint import engine
    from placement_lint.project import project_targets

    config = _config(cwd, options)
    scope = None
    if given:
        targets, scope = project_targets(given, cwd)
    report = engine.lint(targets, config, use_cache=use_cache, cwd=cwd, overlay=overlay)
    if scope is not None:
        scope.restrict(report)
    if report.errors:
        first = report.errors[0]
        raise PlacementLintError(f"{first.get('path')}: {first.get('message')}"
                                 + (f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""))
    return report.findings


def lint_paths(paths: Sequence[str | Path], *, cwd: str | Path | None = None, use_cache: bool = True,
               **options: Any) -> list[Finding]:
    """Findings for files and directories, as `placement-lint check PATHS` reports them.
    `options`: config keys (`select`, `ignore`, `min_confidence`, `exclude`, ...)."""
    base = Path(cwd or Path.cwd()).resolve()
    names = [str(p) for p in paths] or ["."]
    files_only = all((base / p).is_file() for p in names)
    return _run(names, names if files_only else None, base, None, use_cache, options)


def lint_source(text: str, path: str | Path, *, cwd: str | Path | None = None, use_cache: bool = True,
                **options: Any) -> list[Finding]:
    """Findings for `text` analysed as the file `path` (which need not exist), in its project."""
    base = Path(cwd or Path.cwd()).resolve()
    name = str(path)
    return _run([name], [name], base, {name: text.encode("utf-8")}, use_cache, options)
