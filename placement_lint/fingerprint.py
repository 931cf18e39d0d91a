"""Finding identities that survive edits elsewhere in the file: SARIF `partialFingerprints` and
the baseline's keys (--write-baseline / --baseline).

An identity is the rule, the file, the enclosing symbol and the flagged code itself (the
finding's lines, whitespace collapsed), plus an occurrence index among findings with the same key
(two identical calls in one function stay two entries). No line number and no message (messages
cite other lines) goes in, so inserting lines above a finding changes nothing, while editing the
flagged code does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from placement_lint.columns import Lines
from placement_lint.errors import UsageError

BASELINE_VERSION = 1


def _code(path: str, start: int, end: int, lines: Lines) -> str:
    rows = [lines.get(path, n) for n in range(start, max(start, end) + 1)] if start >= 1 else []
    return " ".join("".join(r for r in rows if r is not None).split())


def fingerprints(findings: Iterable[Any]) -> list[str]:
    """One identity per finding, in the order given (paths are read relative to the cwd)."""
    findings = list(findings)
    lines = Lines(errors="replace")
    seen: Counter = Counter()
    out = [""] * len(findings)
    for i in sorted(range(len(findings)), key=lambda k: findings[k].sort_key()):
        f = findings[i]
        key = "\0".join((f.code, f.path.replace(os.sep, "/"), f.symbol, _code(f.path, f.line, f.end_line, lines)))
        n = seen[key]
        seen[key] += 1
        # (surrogateescape: a file name that is not UTF-8 hashes as its bytes, never fails)
        out[i] = hashlib.sha256(f"{key}\0{n}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return out


def write_baseline(path: Path, findings: list[Any]) -> int:
    entries = [{"code": f.code, "path": f.path.replace(os.sep, "/"), "symbol": f.symbol, "fingerprint": fp}
               for f, fp in zip(findings, fingerprints(findings))]
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"version": BASELINE_VERSION, "tool": "placement-lint", "entries": entries},
                                  indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the baseline: {exc.strerror or exc}") from None
    return len(entries)


def read_baseline(path: Path) -> list[dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the baseline: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not a placement-lint baseline (invalid JSON: {exc})") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if (not isinstance(entries, list) or data.get("version") != BASELINE_VERSION
            or not all(isinstance(e, dict) and isinstance(e.get("fingerprint"), str) for e in entries)):
        raise UsageError(f"{path}: not a placement-lint baseline (version {BASELINE_VERSION} with entries expected)")
    return entries


def apply_baseline(findings: list[Any], entries: list[dict[str, str]]) -> tuple[list[Any], list[dict[str, str]]]:
    """(findings not in the baseline, baseline entries that matched nothing: stale)."""
    known = Counter(e["fingerprint"] for e in entries)
    kept = []
    for f, fp in zip(findings, fingerprints(findings)):
        if known[fp] > 0:
            known[fp] -= 1
        else:
            kept.append(f)
    stale = []
    left = +known
    for e in entries:
        if left[e["fingerprint"]] > 0:
            left[e["fingerprint"]] -= 1
            stale.append(e)
    return kept, stale
