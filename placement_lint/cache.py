"""Content-hash cache of per-file facts. Facts are a pure function of a file's bytes, so the key
is the bytes' hash plus the tool and facts versions and the facts mode; config is applied after
facts, so it is not part of the key, except where it picks the mode (a medium-or-high threshold
selects facts.SKIP_TEST_RANK modes, a low one the full ones: neither is served for the other).
Writes are atomic (temp file + rename), so concurrent runs are safe."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from placement_lint import __version__
from placement_lint.facts import FACTS_VERSION


#: modules whose code decides what facts a file has: a change to any of them invalidates the cache
#: (and every module of the analysis/ package, the analyzer's pieces)
_FACT_MODULES = ("analyzer.py", "api.py", "facts.py", "prefilter.py", "regions.py", "suppression.py")


def code_fingerprint() -> str:
    """Hash of the analysis code itself, so an edited analyzer never reads stale facts."""
    h = hashlib.blake2b(digest_size=8)
    here = Path(__file__).resolve().parent
    for name in (*_FACT_MODULES, *sorted(p.relative_to(here).as_posix() for p in (here / "analysis").glob("*.py"))):
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()


#: the keys every facts entry has, with their types
_SHAPE = {"sites": list, "classes": list, "suppressions": dict, "parsed": bool}


class FactsCache:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.salt = f"{__version__}:{FACTS_VERSION}:{code_fingerprint()}:".encode()
        self._ok = True

    def key(self, digest: str, mode: str) -> str:
        return hashlib.blake2b(self.salt + mode.encode() + b"|" + digest.encode(), digest_size=20).hexdigest()

    def get(self, digest: str, mode: str) -> dict[str, Any] | None:
        path = self.dir / (self.key(digest, mode) + ".json")
        try:
            with open(path, "rb") as fh:
                facts = json.loads(fh.read())
        except (OSError, ValueError):
            return None  # missing or torn entry: recompute
        # a well-formed entry of the wrong shape (edited, or written by another tool) is a miss too
        if not isinstance(facts, dict) or not all(isinstance(facts.get(k), t) for k, t in _SHAPE.items()):
            return None
        return facts

    def put(self, digest: str, mode: str, facts: dict[str, Any]) -> None:
        if not self._ok:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            gitignore = self.dir / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("*\n")
            write_json_atomic(self.dir / (self.key(digest, mode) + ".json"), facts)
        except OSError:
            self._ok = False  # read-only checkout: run uncached rather than fail


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as compact JSON to `path` through a temp file and a rename, so a concurrent
    reader sees the old file or the new one, never a torn one. Raises OSError."""
    import tempfile  # only when writing: a run that hits the cache never needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path)


def digest(data: bytes) -> str:
    """Content hash of a file: the cache key's part that names the file's bytes."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


class Manifest:
    """What the last run learnt per path, keyed by (mtime_ns, size): the content digest of a
    candidate file, or "" for a file the prefilter skipped. A warm run then neither reads nor
    scans unchanged files. Also the phase-two scan (files naming a leaky project style), valid
    while no file changed and the leaky names are the same."""

    def __init__(self, directory: Path, salt: bytes):
        self.path = Path(directory) / f"manifest-{hashlib.blake2b(salt, digest_size=6).hexdigest()}.json"
        try:
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read())
            self.files: dict[str, list] = data["files"] if isinstance(data.get("files"), dict) else {}
            self.late: dict[str, Any] = data.get("late") or {}
        except (OSError, ValueError, AttributeError, TypeError):
            self.files, self.late = {}, {}
        self.changed = False

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        entry = self.files.get(path)
        if isinstance(entry, list) and len(entry) in (3, 4) and entry[0] == st.st_mtime_ns and entry[1] == st.st_size:
            return entry[2]
        return None

    def record(self, path: str, st: os.stat_result, file_digest: str) -> None:
        self.files[path] = [st.st_mtime_ns, st.st_size, file_digest]
        self.changed = True

    def late_digest(self, path: str) -> str:
        """The digest of a file the prefilter skips but a reference led to (analysed in full by
        the engine's phase two b): kept as a 4th element, so a warm run need not read it."""
        entry = self.files.get(path)
        return entry[3] if isinstance(entry, list) and len(entry) == 4 and isinstance(entry[3], str) else ""

    def record_late_digest(self, path: str, file_digest: str) -> None:
        entry = self.files.get(path)
        if isinstance(entry, list) and len(entry) >= 3 and entry[2] == "" and file_digest and self.late_digest(path) != file_digest:
            self.files[path] = [*entry[:3], file_digest]
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            write_json_atomic(self.path, {"files": self.files, "late": self.late})
        except OSError:
            pass  # read-only checkout: the next run is cold again, not wrong


class ScanStore:
    """The module scans of resolution.Resolver, kept between runs (per path, valid while the
    file's mtime and size are unchanged), so a warm run reads no module to resolve a name."""

    def __init__(self, directory: Path, salt: bytes):
        # the scanner's own code is part of the key: an edited resolution.py never reads old scans
        try:
            code = (Path(__file__).resolve().parent / "resolution.py").read_bytes()
        except OSError:
            code = b""
        self.path = Path(directory) / f"scans-{hashlib.blake2b(salt + code, digest_size=6).hexdigest()}.json"
        try:
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read())
            self.entries: dict[str, list] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    def save(self) -> None:
        try:
            write_json_atomic(self.path, self.entries)
        except OSError:
            pass  # read-only checkout: the next run scans again
