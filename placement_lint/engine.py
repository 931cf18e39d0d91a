"""Engine: paths -> discovery -> prefilter -> per-file facts -> project index -> rules -> findings."""
# STUB: replaced by the real engine. Signature is the contract used by cli.py.
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from placement_lint.findings import Report


def lint(paths: Sequence[str | Path], config, *, jobs: int | None = None, use_cache: bool = True,
         cache_dir: Path | None = None) -> Report:
    from placement_lint.discovery import discover

    files = discover(paths, config)
    return Report(findings=[], errors=[], files_seen=len(files))
