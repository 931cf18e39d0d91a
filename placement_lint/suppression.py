"""Inline suppressions: `# placement-lint: ignore[DTP101]` (code or slug; on the line or the line
above) and flake8-style `# noqa: DTP101` (on the line). A bare ignore/noqa silences every rule.
`# placement-lint: ignore-file` (or `ignore-file[DTP101]`) anywhere in a file silences the whole
file (line 0 of the table). The names each placement-lint comment (and each `DTP` name in a noqa)
gives are kept with their position, so that an unknown one is reported (DTP001)."""

from __future__ import annotations

import re

_PL_RE = re.compile(r"#\s*placement-lint:\s*ignore(-file)?(?:\[([^\]]*)\])?", re.IGNORECASE)
_NOQA_RE = re.compile(r"#\s*noqa(?::\s*([A-Za-z0-9_\-]+(?:[\s,]+[A-Za-z0-9_\-]+)*))?", re.IGNORECASE)

ALL = "*"


def _names(group: str | None) -> list[str]:
    if not group:
        return [ALL]
    return [n.strip().lower() for n in re.split(r"[\s,]+", group) if n.strip()]


def _comment_lines(text: str):
    """(line number, line) of the lines that may hold a suppression (cheap: most files have none)."""
    if "placement-lint" not in text and "noqa" not in text.lower():
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if "#" in line:
            yield lineno, line


def scan(text: str) -> dict[int, list[str]]:
    """{line: [lower-cased codes or slugs, or "*"]} — which lines each comment covers.

    Cheap: only lines that mention one of the markers are examined.
    """
    out: dict[int, list[str]] = {}
    for lineno, line in _comment_lines(text):
        m = _PL_RE.search(line)
        if m and m.group(1):  # ignore-file: every line
            out.setdefault(0, []).extend(_names(m.group(2)))
        elif m:
            names = _names(m.group(2))
            # a comment alone on its line covers the next line; a trailing one covers its own
            target = lineno + 1 if line.lstrip().startswith("#") else lineno
            out.setdefault(target, []).extend(names)
            if target != lineno:
                out.setdefault(lineno, []).extend(names)
        m = _NOQA_RE.search(line)
        if m:
            out.setdefault(lineno, []).extend(_names(m.group(1)))
    return out


def named(text: str) -> list[list]:
    """[[line, column, name], ...]: the names placement-lint comments give (and the `DTP...`
    names of noqa comments; other names in a noqa belong to other linters)."""
    out: list[list] = []
    for lineno, line in _comment_lines(text):
        m = _PL_RE.search(line)
        if m and m.group(2):
            start = m.start(2)
            for part in re.finditer(r"[^\s,]+", m.group(2)):
                out.append([lineno, start + part.start() + 1, part.group(0)])
        m = _NOQA_RE.search(line)
        if m and m.group(1):
            for part in re.finditer(r"[^\s,]+", m.group(1)):
                if part.group(0).upper().startswith("DTP"):
                    out.append([lineno, m.start(1) + part.start() + 1, part.group(0)])
    return out


def is_suppressed(table: dict, line: int, code: str, slug: str) -> bool:
    for key in (line, 0):
        names = table.get(key) or table.get(str(key))  # JSON round-trips turn keys into strings
        if names and (ALL in names or code.lower() in names or slug in names):
            return True
    return False
