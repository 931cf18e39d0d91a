"""How a path becomes bytes, and bytes become text, everywhere the engine reads a source file.

Reading (`read_source`): only regular files are read. The file is opened with O_NONBLOCK (a FIFO
then opens at once instead of waiting for a writer) and the *descriptor* is fstat'ed before any
read, so a path swapped for a FIFO or a device between a stat and the open is refused too, never
read. At most `max_file_size()` bytes are read (`PLACEMENT_LINT_MAX_FILE_SIZE`, else the
configuration's `max-file-size`, default 64 MiB):
`/dev/zero` behind a symlink, or a generated file of gigabytes, costs an error entry, not the run.

Decoding (`decode`): as CPython reads source (PEP 263, `tokenize.detect_encoding`): UTF-8 unless
a coding cookie on line 1 or 2 names another ASCII-compatible encoding; a UTF-8 BOM is dropped.
Newlines are left as they are (positions count the file's own lines). A file CPython cannot read
(UTF-16/32 with a BOM, an unknown or non-ASCII-compatible cookie, bytes invalid in the encoding)
raises `Undecodable` with the reason and where it is, which the engine reports as DTP000.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
from typing import Any

from placement_lint.errors import UsageError

#: environment variable: the most bytes read from one file (a plain number, or with a K/M/G suffix)
MAX_FILE_SIZE_ENV = "PLACEMENT_LINT_MAX_FILE_SIZE"
DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


#: the configuration's `max-file-size` for the run under way (engine.lint sets it before any
#: file is read; the pool's workers, forked after, inherit it). None: not configured
configured_max: int | None = None


def max_file_size() -> int:
    """The most bytes read from one file: `PLACEMENT_LINT_MAX_FILE_SIZE` (this invocation's
    word), else the configuration's `max-file-size`, else 64 MiB. Raises UsageError for an
    environment value that is not a positive size."""
    raw = os.environ.get(MAX_FILE_SIZE_ENV, "").strip()
    if not raw:
        return configured_max or DEFAULT_MAX_FILE_SIZE
    size = parse_size(raw)
    if size is None:
        raise UsageError(f"{MAX_FILE_SIZE_ENV}={raw!r}: expected a positive size in bytes (e.g. 67108864 or 64M)")
    return size


def parse_size(raw: str) -> int | None:
    """A positive size in bytes from `123`, `64M`, `64MiB`, `1g`...; None if it is not one."""
    number, unit = raw.strip().upper().removesuffix("B").removesuffix("I"), ""
    if number[-1:] in ("K", "M", "G"):
        number, unit = number[:-1], number[-1]
    if not number.strip().isdigit() or int(number) <= 0:
        return None
    return int(number) * _UNITS[unit]


class Unreadable(Exception):
    """A path that is not read: its reason, worded for an error entry ("cannot read file: ...")."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_regular(mode: int) -> str | None:
    """Why a file of this st_mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, what in _KINDS:
        if test(mode):
            return f"it is {what}, not a regular file; only regular files are read"
    return "it is not a regular file; only regular files are read"


def too_large(size: int, limit: int) -> str:
    return (f"file is {size} bytes, over the maximum of {limit} bytes read per file "
            f"(set max-file-size in the configuration, or {MAX_FILE_SIZE_ENV}, to raise it)")


def os_reason(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """An OSError as the reason of an error entry; a symlink loop and a socket said as such."""
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.ENXIO and path is not None:  # open() of a socket
        try:
            why = not_regular(os.stat(path).st_mode)
        except OSError:
            why = None
        if why:
            return why
    return str(exc.strerror or exc)


#: open flags: no blocking open (FIFO), no controlling terminal (tty), not inherited by children
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def read_source(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path`, at most `limit` (default `max_file_size()`).
    Raises Unreadable with the reason otherwise."""
    if limit is None:
        limit = max_file_size()
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise Unreadable(os_reason(exc, path)) from None
    try:
        st = os.fstat(fd)
        why = not_regular(st.st_mode)
        if why:
            raise Unreadable(why)
        if st.st_size > limit:
            raise Unreadable(too_large(st.st_size, limit))
        parts, total, want = [], 0, st.st_size + 1
        while True:  # until EOF, as file.read() does; the file may have grown since the fstat
            chunk = os.read(fd, min(want, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise Unreadable(too_large(os.fstat(fd).st_size, limit))
            want = 1 << 16
        return parts[0] if len(parts) == 1 else b"".join(parts)
    except OSError as exc:
        raise Unreadable(os_reason(exc)) from None
    finally:
        os.close(fd)


class Undecodable(ValueError):
    """Bytes CPython would not read as source: `message`, at 1-based `line` and `column`."""

    def __init__(self, message: str, line: int = 1, column: int = 1):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column

    def error(self) -> dict[str, Any]:
        """The facts' `error` entry (reported as DTP000)."""
        return {"line": self.line, "column": self.column, "message": self.message}


#: byte-order marks of encodings CPython never reads source in (UTF-32 first: its LE mark starts
#: with UTF-16's)
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _head(data: bytes) -> bytes:
    """The first two lines: where a BOM and a coding cookie can be."""
    first = data.find(b"\n")
    if first == -1:
        return data
    second = data.find(b"\n", first + 1)
    return data if second == -1 else data[: second + 1]


def detect_encoding(data: bytes) -> str:
    """The encoding CPython reads `data` in ('utf-8-sig' when it starts with a UTF-8 BOM).
    Raises Undecodable for a BOM or cookie CPython refuses."""
    for bom, name in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise Undecodable(f"file starts with a {name} byte-order mark: Python reads source files only in "
                              f"UTF-8 or an ASCII-compatible encoding named by a coding cookie; save it as UTF-8")
    import io
    import tokenize  # (here: a run that decodes nothing never imports it)

    head = _head(data)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(head).readline)
    except SyntaxError as exc:
        message = str(exc.msg)
        if message.startswith("invalid or missing encoding declaration"):
            return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"  # decode() says which byte
        raise Undecodable(f"coding cookie: {message}", _cookie_line(head)) from None
    # CPython refuses a cookie naming an encoding that is not ASCII-compatible ("encoding problem: utf-16")
    if encoding != "utf-8-sig" and "\n#".encode(encoding) != b"\n#":
        raise Undecodable(f"coding cookie: encoding problem: {encoding} is not ASCII-compatible", _cookie_line(head))
    return encoding


def _cookie_line(head: bytes) -> int:
    lines = head.split(b"\n")
    return 2 if len(lines) > 1 and b"coding" in lines[1] and b"coding" not in lines[0] else 1


def decode_with_encoding(data: bytes) -> tuple[str, str]:
    """(text, encoding) of source bytes, as CPython reads them; raises Undecodable."""
    encoding = detect_encoding(data)
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = data.rfind(b"\n", 0, start) + 1
        line = data.count(b"\n", 0, start) + 1
        prefix = data[line_start:start]
        if line == 1 and encoding == "utf-8-sig":
            prefix = prefix.removeprefix(codecs.BOM_UTF8)
        column = len(prefix.decode(encoding, errors="replace")) + 1
        name = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8"}.get(encoding, encoding)
        cookie = "" if name == "UTF-8" else " (the encoding its coding cookie names)"
        raise Undecodable(f"file is not valid {name}{cookie}: {exc.reason} at byte {start}", line, column) from None


def decode(data: bytes) -> str:
    """Source bytes as text, as CPython reads them; raises Undecodable."""
    return decode_with_encoding(data)[0]


def encode(text: str, encoding: str) -> bytes:
    """`text` back in the file's `encoding` ('utf-8-sig' writes the BOM again)."""
    return text.encode(encoding)


def decodable(data: bytes) -> bool:
    """Whether `data` decodes as source. Cheap for the usual file (ASCII without a cookie: no
    decode at all), so it can run on every file the byte prefilter rejects."""
    if data.isascii() and b"coding" not in _head(data):
        return True
    try:
        decode_with_encoding(data)
    except Undecodable:
        return False
    return True
