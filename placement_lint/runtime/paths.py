"""Which file is which: the analysed tree against the files the ranks ran. No torch here.

The ranks may import another copy of the analysed package (unpacked wheel vs site-packages,
checkout vs container path). A runtime file that is not an analysed file is taken for the analysed
file with the same path relative to its top-level package when the two are byte-identical
(`PathIndex`); same package-relative path with other contents never matches, and `confirm` warns
about it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable


def _abs(path: str, cwd: str) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(cwd, path))


def _rel(path: str, cwd: str) -> str:
    ap = os.path.abspath(path)
    root = os.path.abspath(cwd).rstrip(os.sep) + os.sep
    return ap.removeprefix(root)


def _source_lines(path: str, line: int, count: int = 4) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[line - 1:line - 1 + count])


class PathIndex:
    """Which runtime file is which analysed file, computed once per merge.

    A runtime path (a site's file, a local_map'd function's file) that is not itself an analysed
    path maps to the analysed path with the same path relative to the top-level package (walk up
    while `__init__.py` exists, through namespace subpackages: `torchtitan/models/common/moe.py`,
    `torchtitan/components/loss.py`) if the two files hash equal.
    Equal package-relative paths with different contents are kept in `differ` and not mapped.
    Files are hashed only where two package-relative paths collide; hashes are cached.
    """

    def __init__(self, cwd: str, analysed: Iterable[str] = (), runtime: Iterable[str] = ()) -> None:
        self.cwd = cwd
        self.alias: dict[str, str] = {}  # runtime abs path -> analysed abs path
        self.differ: list[tuple[str, str]] = []  # (runtime, analysed): same package path, other bytes
        self._digest: dict[str, str | None] = {}
        self._top: dict[str, str | None] = {}  # directory -> the one holding its top-level package
        self.analysed = {_abs(p, cwd) for p in analysed if not _unreal(p)}
        by_rel: dict[str, list[str]] = {}
        for a in sorted(self.analysed):
            rel = self.package_relative(a)
            if rel is not None:
                by_rel.setdefault(rel, []).append(a)
        for p in sorted({_abs(p, cwd) for p in runtime if not _unreal(p)} - self.analysed):
            rel = self.package_relative(p)
            candidates = by_rel.get(rel) if rel is not None else None
            if not candidates:
                continue
            digest = self.digest(p)
            same = [a for a in candidates if digest is not None and self.digest(a) == digest]
            if same:
                self.alias[p] = same[0]
            else:
                self.differ.append((p, candidates[0]))

    def canon(self, path: str) -> str:
        """The analysed file `path` is a byte-identical copy of, else `path` (absolute)."""
        ap = _abs(path, self.cwd)
        return self.alias.get(ap, ap)

    def package_root(self, directory: str) -> str | None:
        """The directory holding the top-level package `directory` belongs to (None: no package).

        Up to the nearest directory with an `__init__.py` (crossing at most
        _NAMESPACE_LEVELS directories without one: namespace subpackages such as
        `torchtitan/components/`), then up while `__init__.py` exists.
        """
        if directory not in self._top:
            self._top[directory] = _package_root(directory)
        return self._top[directory]

    def package_relative(self, path: str) -> str | None:
        top = self.package_root(os.path.dirname(path))
        return os.path.relpath(path, top) if top is not None else None

    def digest(self, path: str) -> str | None:
        if path not in self._digest:
            try:
                with open(path, "rb") as fh:
                    self._digest[path] = hashlib.sha256(fh.read()).hexdigest()
            except OSError:
                self._digest[path] = None
        return self._digest[path]


#: directories without `__init__.py` crossed on the way up to a regular package
_NAMESPACE_LEVELS = 3


def _is_package(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, "__init__.py"))


def _package_root(directory: str) -> str | None:
    d = directory
    for _ in range(_NAMESPACE_LEVELS):
        if _is_package(d):
            break
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent
    if not _is_package(d):
        return None
    while True:
        parent = os.path.dirname(d)
        if parent == d or not _is_package(parent):
            return parent
        d = parent


def _unreal(path: str) -> bool:
    return not path or path.startswith("<")  # "<torch>", "<string>": no file
