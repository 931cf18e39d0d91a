"""Content-hash cache of per-file facts. Facts are a pure function of a file's bytes, so the key
is the bytes' hash plus the tool and facts versions and the facts mode; config is applied after
facts, so it is not part of the key, except where it picks the mode (a medium-or-high threshold
selects facts.SKIP_TEST_RANK modes, a low one the full ones: neither is served for the other).
Writes are atomic (temp file + rename), so concurrent runs are safe.

Nothing read back is trusted: every file here is sealed (`seal`: its first key is a checksum of
the rest of its bytes), and a facts entry also names the content digest and mode it is for and is
checked against the facts schema (`valid_facts`). An entry that fails any check (torn, edited, written by
another tool, copied under another key) is a miss: recomputed and overwritten. The manifest and
the module scans, damaged, are dropped whole: the run is cold, not wrong."""

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
#: (tests/test_cache_fingerprint.py checks that every module facts import is listed)
_FACT_MODULES = ("analyzer.py", "api.py", "cst_parse.py", "facts.py", "file_parts.py", "prefilter.py", "rank_flow.py",
                 "regions.py", "skippable_tests.py", "source_text.py", "suppression.py")


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
_SHAPE = {"sites": list, "classes": list, "suppressions": dict, "parsed": bool, "mode": str}
#: keys some facts have, with their types
_OPTIONAL = {"functions": dict, "suppression_names": list, "dp_context": bool, "unpositioned": bool, "positioned": bool}


def valid_facts(facts: Any) -> bool:
    """Whether `facts` has the schema facts.file_facts returns, as deep as the engine and the
    index read it unguarded: typed top-level keys, sites and classes as objects (a class's
    `bare_exits` indexing its file's sites), the error as {line, column, message}."""
    if not isinstance(facts, dict):
        return False
    if not all(isinstance(facts.get(k), t) for k, t in _SHAPE.items()):
        return False
    if not all(isinstance(facts[k], t) for k, t in _OPTIONAL.items() if k in facts):
        return False
    sites, err = facts["sites"], facts.get("error")
    if err is not None and not (isinstance(err, dict) and type(err.get("line")) is int
                                and type(err.get("column")) is int and isinstance(err.get("message"), str)):
        return False
    if not all(isinstance(site, dict) and isinstance(site.get("kind"), str) for site in sites):
        return False
    for c in facts["classes"]:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            return False
        exits = c.get("bare_exits", ())
        if not isinstance(exits, (list, tuple)) or not all(type(i) is int and 0 <= i < len(sites) for i in exits):
            return False
    return all(isinstance(v, dict) for v in facts.get("functions", {}).values())


_SEAL_HEAD, _SUM_LEN = b'{"sum":"', 32


def _sum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_SUM_LEN // 2).hexdigest().encode()


def seal(payload: dict[str, Any]) -> bytes:
    """`payload` (a non-empty object) as compact JSON with a first key "sum": the checksum of the
    exact bytes of the rest, so checking it needs a hash, not a re-serialisation."""
    body = json.dumps(payload, separators=(",", ":")).encode()  # b'{"k":...}'
    return _SEAL_HEAD + _sum(body) + b'",' + body[1:]


def unseal(raw: bytes) -> dict[str, Any] | None:
    """The payload of `seal`'s bytes, or None: not sealed, torn, or any byte of it changed."""
    at = len(_SEAL_HEAD) + _SUM_LEN
    if not raw.startswith(_SEAL_HEAD) or raw[at : at + 2] != b'",':
        return None
    body = b"{" + raw[at + 2 :]
    if _sum(body) != raw[len(_SEAL_HEAD) : at]:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def read_sealed(path: Path) -> dict[str, Any] | None:
    """The payload (an object) of the sealed file at `path`; None if missing, torn or damaged."""
    try:
        with open(path, "rb") as fh:
            return unseal(fh.read())
    except OSError:
        return None


class FactsCache:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.salt = f"{__version__}:{FACTS_VERSION}:{code_fingerprint()}:".encode()
        self._ok = True

    def key(self, digest: str, mode: str) -> str:
        return hashlib.blake2b(self.salt + mode.encode() + b"|" + digest.encode(), digest_size=20).hexdigest()

    def get(self, digest: str, mode: str) -> dict[str, Any] | None:
        """The facts of the content `digest` in `mode`, or None: missing, torn, damaged, an entry
        for other bytes or another mode, or facts not of the schema (each: recompute)."""
        entry = read_sealed(self.dir / (self.key(digest, mode) + ".json"))
        if entry is None or entry.get("digest") != digest or entry.get("mode") != mode:
            return None
        facts = entry.get("facts")
        return facts if valid_facts(facts) else None

    def put(self, digest: str, mode: str, facts: dict[str, Any]) -> None:
        if not self._ok:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            gitignore = self.dir / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("*\n")
            entry = seal({"digest": digest, "mode": mode, "facts": facts})
            write_atomic(self.dir / (self.key(digest, mode) + ".json"), entry)
        except OSError:
            self._ok = False  # read-only checkout: run uncached rather than fail


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file and a rename, so a concurrent reader sees the
    old file or the new one, never a torn one. Raises OSError."""
    import tempfile  # only when writing: a run that hits the cache never needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def digest(data: bytes) -> str:
    """Content hash of a file: the cache key's part that names the file's bytes."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


class Manifest:
    """What the last run learnt per path, valid while the file's stat is unchanged: the content
    digest of a candidate file, or "" for a file the prefilter skipped. A warm run then neither
    reads nor scans unchanged files. Also the phase-two scan (files naming a leaky project
    style), valid while no file changed and the leaky names are the same.

    An entry is [mtime_ns, size, ctime_ns, inode, digest] (+ a late digest): a file rewritten
    with its old size and mtime put back (cp -p, rsync -t, an editor's atomic save) still has a
    new ctime or inode, and the same path in another tree sharing a --cache-dir has another
    inode. The file is sealed (a checksum): a damaged or edited manifest is dropped whole, never
    read as a wrong digest. README ("Cache") says what a stat cannot tell."""

    VERSION = 2

    def __init__(self, directory: Path, salt: bytes):
        self.path = Path(directory) / f"manifest-{hashlib.blake2b(salt, digest_size=6).hexdigest()}.json"
        data = read_sealed(self.path)
        files = data.get("files") if data is not None and data.get("version") == self.VERSION else None
        late = data.get("late") if files is not None else None
        self.files: dict[str, list] = files if isinstance(files, dict) else {}
        self.late: dict[str, Any] = late if _valid_late(late) else {}
        self.changed = False

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        """The recorded digest ("" for a skipped file) while `st` matches the entry, else None."""
        entry = self.files.get(path)
        if (isinstance(entry, list) and len(entry) in (5, 6) and entry[0] == st.st_mtime_ns and entry[1] == st.st_size
                and entry[2] == st.st_ctime_ns and entry[3] == st.st_ino and _is_digest(entry[4])):
            return entry[4]
        return None

    def record(self, path: str, st: os.stat_result, file_digest: str) -> None:
        self.files[path] = [st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino, file_digest]
        self.changed = True

    def forget(self, path: str) -> None:
        """Drop `path`'s entry (its bytes contradicted it, or it could not be read again)."""
        if self.files.pop(path, None) is not None:
            self.changed = True

    def late_digest(self, path: str) -> str:
        """The digest of a file the prefilter skips but a reference led to (analysed in full by
        the engine's phase two b): kept as a 6th element, so a warm run need not read it."""
        entry = self.files.get(path)
        return entry[5] if isinstance(entry, list) and len(entry) == 6 and _is_digest(entry[5]) else ""

    def record_late_digest(self, path: str, file_digest: str) -> None:
        entry = self.files.get(path)
        if (isinstance(entry, list) and len(entry) >= 5 and entry[4] == "" and file_digest
                and self.late_digest(path) != file_digest):
            self.files[path] = [*entry[:5], file_digest]
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            write_atomic(self.path, seal({"version": self.VERSION, "files": self.files, "late": self.late}))
            self.changed = False  # (a later save writes only what changed since)
        except OSError:
            pass  # read-only checkout: the next run is cold again, not wrong


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or len(value) == 40)


def _valid_late(late: Any) -> bool:
    return (isinstance(late, dict) and all(isinstance(late.get(k), list) and all(isinstance(x, str) for x in late[k])
                                           for k in ("names", "paths")))


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
        data = read_sealed(self.path)  # damaged or edited: scan again
        entries = data.get("entries") if data is not None else None
        self.entries: dict[str, list] = entries if isinstance(entries, dict) else {}

    def save(self) -> None:
        try:
            write_atomic(self.path, seal({"entries": self.entries}))
        except OSError:
            pass  # read-only checkout: the next run scans again
