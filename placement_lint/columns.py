"""Columns as each output format defines them. Findings carry 1-based columns counted in
characters (Unicode code points), as the text and JSON formats print them. SARIF counts UTF-16
code units unless a run says otherwise (its default `columnKind`, which GitHub code scanning
uses); reviewdog's rdjson counts UTF-8 bytes. The same column differs between the three as soon
as a line holds non-ASCII text before it (a comment in another script, an emoji in a string)."""

from __future__ import annotations


class Lines:
    """The text of the lines findings point at, read once per file (relative to the cwd), decoded
    as the engine decoded it (source_text: coding cookie, BOM). A file that cannot be read again
    (gone, replaced by a FIFO) has no lines: its columns stay unconverted, never a failure."""

    def __init__(self, errors: str = "surrogateescape") -> None:
        self._files: dict[str, list[str] | None] = {}
        self._errors = errors  # for a file that does not decode; "replace" where the text is hashed (fingerprints)

    def get(self, path: str, line: int) -> str | None:
        if path not in self._files:
            from placement_lint.source_text import Undecodable, Unreadable, decode, read_source

            try:
                data = read_source(path)
            except Unreadable:
                self._files[path] = None
            else:
                try:
                    text = decode(data)
                except Undecodable:  # (its finding is the DTP000 that says so)
                    text = data.decode("utf-8", errors=self._errors)
                # universal newlines, as Python (and the parser) count lines
                self._files[path] = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        lines = self._files[path]
        if lines is None or not 1 <= line <= len(lines):
            return None
        return lines[line - 1]


def _convert(lines: Lines, path: str, line: int, column: int, encoding: str, width: int) -> int:
    text = lines.get(path, line)
    if text is None or column < 1:
        return column
    prefix = text[: column - 1]
    units = len(prefix.encode(encoding, errors="surrogatepass")) // width
    return 1 + units + max(0, column - 1 - len(prefix))  # past the line's end: one unit a column


def utf16(lines: Lines, path: str, line: int, column: int) -> int:
    """The 1-based code-point `column` of `line` as a 1-based UTF-16 code-unit column."""
    return _convert(lines, path, line, column, "utf-16-le", 2)


def utf8(lines: Lines, path: str, line: int, column: int) -> int:
    """The 1-based code-point `column` of `line` as a 1-based UTF-8 byte column."""
    return _convert(lines, path, line, column, "utf-8", 1)
