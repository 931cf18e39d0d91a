"""Inline suppressions: `# placement-lint: ignore[DTP101]` (code or slug; on the line or the line
above) and flake8-style `# noqa: DTP101` (on the line). A bare ignore/noqa silences every rule."""

from __future__ import annotations

import re

_PL_RE = re.compile(r"#\s*placement-lint:\s*ignore(?:\[([^\]]*)\])?", re.IGNORECASE)
_NOQA_RE = re.compile(r"#\s*noqa(?::\s*([A-Za-z0-9_\-]+(?:[\s,]+[A-Za-z0-9_\-]+)*))?", re.IGNORECASE)

ALL = "*"


def _names(group: str | None) -> list[str]:
    if not group:
        return [ALL]
    return [n.strip().lower() for n in re.split(r"[\s,]+", group) if n.strip()]


def scan(text: str) -> dict[int, list[str]]:
    """{line: [lower-cased codes or slugs, or "*"]} — which lines each comment covers.

    Cheap: only lines that mention one of the markers are examined.
    """
    out: dict[int, list[str]] = {}
    if "placement-lint" not in text and "noqa" not in text.lower():
        return out
    for lineno, line in enumerate(text.splitlines(), start=1):
        if "#" not in line:
            continue
        m = _PL_RE.search(line)
        if m:
            names = _names(m.group(1))
            # a comment alone on its line covers the next line; a trailing one covers its own
            target = lineno + 1 if line.lstrip().startswith("#") else lineno
            out.setdefault(target, []).extend(names)
            if target != lineno:
                out.setdefault(lineno, []).extend(names)
        m = _NOQA_RE.search(line)
        if m:
            out.setdefault(lineno, []).extend(_names(m.group(1)))
    return out


def is_suppressed(table: dict, line: int, code: str, slug: str) -> bool:
    names = table.get(line) or table.get(str(line))  # JSON round-trips turn keys into strings
    if not names:
        return False
    return ALL in names or code.lower() in names or slug in names
