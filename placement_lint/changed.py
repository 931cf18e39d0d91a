"""Changed lines since a git revision, for review bots that report only on what a change touched.

Built on `git diff --unified=0`: each hunk header `@@ -a,b +c,d @@` adds lines c..c+d-1 of the new
file. Untracked files (not ignored) count as changed throughout.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from placement_lint.errors import UsageError

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
ALL_LINES = None  # marker: every line of the file is new


def _git(args: list[str], cwd: Path) -> str:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UsageError("--only-changed needs git, which is not installed") from None
    if res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or ["git failed"])[-1]
        raise UsageError(f"--only-changed: git {' '.join(args[:2])}: {msg}")
    return res.stdout


def _check_repository(base: str, cwd: Path) -> None:
    """Clear errors before any diff: not in a git work tree (a plain `git diff` there would
    compare files outside git), or a revision this checkout lacks (CI clones are shallow or
    detached: fetch the base first)."""
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=cwd, capture_output=True,
                                text=True, check=False)
    except FileNotFoundError:
        raise UsageError("--only-changed needs git, which is not installed") from None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise UsageError(f"--only-changed needs a git repository: {cwd} is not inside a git work tree")
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], cwd=cwd,
                         capture_output=True, text=True, check=False)
    if rev.returncode != 0:
        raise UsageError(f"--only-changed: this checkout has no revision {base!r} (a shallow or detached CI "
                         f"checkout: fetch it first, e.g. `git fetch origin <branch>`, or pass a commit)")


def changed_lines(base: str, cwd: Path) -> dict[str, set[int] | None]:
    """{path relative to cwd (posix): changed line numbers, or None for a whole new file}."""
    _check_repository(base, cwd)
    out: dict[str, set[int] | None] = {}
    diff = _git(["diff", "--unified=0", "--no-color", "--no-ext-diff", "--relative", base, "--"], cwd)
    current: str | None = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            target = line[4:]
            current = None if target == "/dev/null" else target[2:] if target.startswith("b/") else target
            if current is not None:
                out.setdefault(current, set())
        elif current is not None and (m := _HUNK.match(line)):
            start, count = int(m.group(1)), int(m.group(2) or 1)
            lines = out[current]
            if lines is not None:
                lines.update(range(start, start + count))
    for path in _git(["ls-files", "--others", "--exclude-standard"], cwd).splitlines():
        out[path] = ALL_LINES
    return out


def touched(changed: dict[str, set[int] | None], path: str, line: int, end_line: int) -> bool:
    """Whether any of lines line..end_line of `path` changed."""
    if path not in changed:
        return False
    lines = changed[path]
    return lines is ALL_LINES or any(ln in lines for ln in range(line, max(line, end_line) + 1))


def keep(changed: dict[str, set[int] | None], finding) -> bool:
    """A finding is the change's business when any line of its range, or a `related` location
    (the hook a DTP102 use site points at, the callee where the rank-dependent use is), changed:
    editing `to_local(grad_placements=...)` back to `to_local()` in a style's hook reports the
    places it is applied."""
    if touched(changed, finding.path, finding.line, finding.end_line):
        return True
    return any(touched(changed, r.path, r.line, r.line) for r in finding.related)
