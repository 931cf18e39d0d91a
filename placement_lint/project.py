"""The project around explicitly named files (pre-commit, an editor, a review bot).

Cross-file findings need the whole project: a style's hook lives in one file and its plan entry
in another, and pre-commit passes only the staged files (in batches). Given files only, the engine
analyses the project they belong to (cheap when the facts cache is warm) and the report keeps the
findings *located in or caused by* the given files: a finding in one of them, or one whose
`related` locations (the hook a DTP102 cites, a callee's evidence) lie in one of them. So the
result does not depend on how the files are batched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

#: a directory holding one of these is a project root (nearest first, walking up)
MARKERS = ("pyproject.toml", "placement-lint.toml", "setup.cfg", "setup.py", ".git")


def find_root(files: Iterable[str], cwd: Path) -> Path | None:
    """The nearest directory above every file that holds a project marker, or None."""
    dirs = [os.path.dirname(os.path.abspath(os.path.join(cwd, f))) for f in files]
    if not dirs:
        return None
    try:
        d = os.path.commonpath(dirs)
    except ValueError:  # different drives (Windows)
        return None
    while True:
        if any(os.path.exists(os.path.join(d, m)) for m in MARKERS):
            return Path(d)
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def project_targets(files: list[str], cwd: Path, root: Path | None = None) -> tuple[list[str], "Scope | None"]:
    """(paths to lint, Scope to report) for explicitly given files: their project (`root`, else
    found above them) with the files themselves still named (excludes spare them), or just the
    files when no project is found."""
    root = root or find_root(files, cwd)
    if root is None:
        return list(files), None
    return [str(root), *files], Scope(files, cwd)


def _real(path: str, cwd: Path) -> str:
    return os.path.realpath(os.path.join(cwd, path))


class Scope:
    """The given files: which findings and errors of a project run concern them."""

    def __init__(self, files: Iterable[str], cwd: Path):
        self.cwd = cwd
        self.files = {_real(f, cwd) for f in files}

    def concerns(self, finding) -> bool:
        return _real(finding.path, self.cwd) in self.files or any(
            _real(r.path, self.cwd) in self.files for r in finding.related)

    def restrict(self, report) -> None:
        report.findings = [f for f in report.findings if self.concerns(f)]
        report.errors = [e for e in report.errors if _real(e["path"], self.cwd) in self.files]
