"""Discovery: command-line paths -> the sorted, deduplicated list of Python files to lint.

Directories are walked with `os.scandir` (no stat per entry on Linux: the directory listing
carries the file type), excluded directories are pruned before they are entered, and only
directories and `*.py`/`*.pyi` names are ever matched against patterns.

Patterns (`exclude`, `extend-exclude`, `.gitignore`, `.git/info/exclude`) use gitignore syntax.
They are compiled here rather than matched through `pathspec.PathSpec` (tried: its GitIgnoreSpec
disagrees with git on `a/**` matching `a/`, `b/**/` matching the file `b/c` and on unterminated
brackets; tests/test_discovery.py cross-checks this matcher against `git ls-files`): pathspec matches one
pattern at a time in Python (too slow for a 300-line `.gitignore` over thousands of paths), and
its regexes also match a path through any matching ancestor, with semantics that changed between
pathspec 0.12 and 1.x.  Because ancestors are pruned during the walk, each path here only needs
an *exact* match, which one combined regex per run of same-polarity patterns answers.

A directory that cannot be listed, and an ignore file that exists but cannot be read, become error
entries (`errors`); the walk goes on. Every `*.py` entry that is not a directory is listed, FIFOs,
devices and symlink loops included: the engine refuses to read those, with the reason, as an error
entry for that path. Only symlinks to directories (not followed) and dangling symlinks are skipped.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from placement_lint.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from placement_lint.config import Config

PY_SUFFIXES = (".py", ".pyi")


def _glob_segment(seg: str) -> str:
    """Regex for one path segment of a gitignore pattern (no `/` inside)."""
    out: list[str] = []
    i, n = 0, len(seg)
    while i < n:
        c = seg[i]
        if c == "*":
            while i + 1 < n and seg[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(seg[i]))
        elif c == "[":
            j = i + 1
            if j < n and seg[j] in "!^":
                j += 1
            if j < n and seg[j] == "]":  # a leading `]` is a literal member
                j += 1
            while j < n and seg[j] != "]":
                j += 1
            if j >= n:  # unterminated: a literal `[`
                out.append(re.escape(c))
            else:
                body = seg[i + 1 : j]
                negated = body[:1] in ("!", "^")
                if negated:
                    body = body[1:]
                members = "".join(ch if ch == "-" else re.escape(ch) for ch in body)
                out.append(f"[^/{members}]" if negated else f"[{members}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _parse(line: str) -> tuple[str, bool, bool, bool] | None:
    """One gitignore line -> (pattern, negated, dir_only, anchored); None for blanks/comments."""
    pat = line.rstrip("\r\n")
    stripped = pat.rstrip(" ")
    if stripped != pat and stripped.endswith("\\"):  # `foo\ `: an escaped trailing space stays
        stripped += " "
    pat = stripped
    if not pat or pat.startswith("#"):
        return None
    negated = pat.startswith("!")
    if negated:
        pat = pat[1:]
    elif pat[:2] in ("\\!", "\\#"):
        pat = pat[1:]
    dir_only = pat.endswith("/")
    pat = pat.rstrip("/")
    # A slash at the start or in the middle anchors the pattern to its directory.
    anchored = "/" in pat
    pat = pat.lstrip("/")
    if not pat:
        return None
    return pat, negated, dir_only, anchored


def _regex(pat: str, dir_only: bool, anchored: bool) -> str:
    out = "" if anchored else "(?:.*/)?"
    sep = ""
    segs = [s for s in pat.split("/") if s]
    for i, seg in enumerate(segs):
        if seg == "**":
            # trailing `/**`: everything inside; leading or middle `**/`: zero or more directories
            out += sep + (".+" if i == len(segs) - 1 else "(?:.*/)?")
            sep = ""
        else:
            # (?=[^/]): a segment is never empty, so `b/*` cannot match the directory `b/`
            out += sep + "(?=[^/])" + _glob_segment(seg)
            sep = "/"
    return out + ("/$" if dir_only else "/?$")


def translate(line: str) -> tuple[str, bool] | None:
    """One gitignore line -> (regex source, negated), or None for blank lines and comments.

    The regex matches, in full, a `/`-separated path relative to the pattern file's
    directory; a directory is written with a trailing `/` (so `build/` only matches
    directories).
    """
    parsed = _parse(line)
    if parsed is None:
        return None
    pat, negated, dir_only, anchored = parsed
    return _regex(pat, dir_only, anchored), negated


_GLOB_CHARS = frozenset("*?[\\")


class _Run:
    """Consecutive patterns of one polarity. Unanchored patterns (no inner `/`) can only match
    the last path component, so they are checked against the name alone: literal names by a set
    lookup, globs by one regex; anchored patterns by one regex over the whole path."""

    __slots__ = ("ignored", "names", "dir_names", "name_regex", "path_regex", "_name_src", "_path_src")

    def __init__(self, ignored: bool):
        self.ignored = ignored
        self.names: set[str] = set()  # literal names, files or directories
        self.dir_names: set[str] = set()  # literal names, directories only
        self._name_src: list[str] = []
        self._path_src: list[str] = []
        self.name_regex: re.Pattern[str] | None = None
        self.path_regex: re.Pattern[str] | None = None

    def add(self, pat: str, dir_only: bool, anchored: bool) -> None:
        if not anchored and not (_GLOB_CHARS & set(pat)):
            (self.dir_names if dir_only else self.names).add(pat)
        elif not anchored:
            self._name_src.append(_glob_segment(pat) + ("/$" if dir_only else "/?$"))
        else:
            self._path_src.append(_regex(pat, dir_only, anchored))

    def compile(self) -> None:
        if self._name_src:
            self.name_regex = re.compile("|".join(f"(?:{r})" for r in self._name_src), re.DOTALL)
        if self._path_src:
            self.path_regex = re.compile("|".join(f"(?:{r})" for r in self._path_src), re.DOTALL)

    def matches(self, rel: str, name: str, is_dir: bool) -> bool:
        if name in self.names or (is_dir and name in self.dir_names):
            return True
        if self.name_regex is not None and self.name_regex.match(name + "/" if is_dir else name):
            return True
        return self.path_regex is not None and self.path_regex.match(rel) is not None


class PatternSet:
    """Compiled gitignore-style patterns: the last matching pattern wins, as in git."""

    __slots__ = ("_runs",)

    def __init__(self, lines: Iterable[str]):
        runs: list[_Run] = []
        for line in lines:
            parsed = _parse(line)
            if parsed is None:
                continue
            pat, negated, dir_only, anchored = parsed
            if not runs or runs[-1].ignored == negated:
                runs.append(_Run(ignored=not negated))
            runs[-1].add(pat, dir_only, anchored)
        for run in runs:
            run.compile()
        self._runs = runs[::-1]  # checked from the last run backwards: the first match decides

    def __bool__(self) -> bool:
        return bool(self._runs)

    def check(self, rel: str) -> bool | None:
        """True if `rel` is ignored, False if a negation re-includes it, None if nothing matched.

        `rel` is relative to the pattern file's directory, `/`-separated; directories end in `/`.
        """
        is_dir = rel.endswith("/")
        name = rel[:-1].rpartition("/")[2] if is_dir else rel.rpartition("/")[2]
        return self._check(rel, name, is_dir)

    def _check(self, rel: str, name: str, is_dir: bool) -> bool | None:
        for run in self._runs:
            if run.matches(rel, name, is_dir):
                return run.ignored
        return None

    def matches_path_or_parent(self, rel: str) -> bool:
        """Whether a file is ignored either itself or through one of its parent directories."""
        parts = rel.split("/")
        for k in range(1, len(parts)):
            if self.check("/".join(parts[:k]) + "/"):
                return True  # as in git, nothing under an ignored directory comes back
        return self.check(rel) is True


def _read_ignore_file(path: str, errors: list[dict[str, str]] | None = None, shown: str = "") -> PatternSet | None:
    """The patterns of an ignore file; None if it is absent or empty. One that exists but cannot
    be read (unreadable, a FIFO: never opened blocking) is an error entry in `errors`."""
    from placement_lint.source_text import Unreadable, read_source

    try:
        data = read_source(path)
    except Unreadable as exc:
        if errors is not None and os.path.lexists(path):
            errors.append({"path": shown or path, "message": f"cannot read ignore file: {exc}"})
        return None
    ps = PatternSet(data.decode("utf-8", errors="replace").splitlines())
    return ps or None


def _is_loop(path: str) -> bool:
    """Whether `path` is a symlink loop (os.path.exists says False: it looks absent)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _is_under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _rel_dir(path: str, base: str) -> str:
    """`path` relative to its ancestor `base`, `/`-separated with a trailing `/` ('' if equal)."""
    if path == base:
        return ""
    return os.path.relpath(path, base).replace(os.sep, "/") + "/"


# An ignore chain entry: (prefix, strip, patterns); the path checked is prefix + rel[strip:].
_Chain = tuple[tuple[str, int, PatternSet], ...]


def _ancestor_ignores(top: str, root: str, errors: list[dict[str, str]] | None = None) -> _Chain:
    """Ignore files that apply to `top` from above: `.git/info/exclude` and every `.gitignore`
    from the repository root (else the config root, if `top` is under it) down to `top`'s parent."""
    git_top = None
    cur = top
    while True:
        if os.path.exists(os.path.join(cur, ".git")):
            git_top = cur
            break
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    start = git_top or (root if _is_under(top, root) else top)
    chain: list[tuple[str, int, PatternSet]] = []
    if git_top is not None:
        ps = _read_ignore_file(os.path.join(git_top, ".git", "info", "exclude"), errors)
        if ps:
            chain.append((_rel_dir(top, git_top), 0, ps))
    dirs = []
    cur = top
    while cur != start:
        cur = os.path.dirname(cur)
        dirs.append(cur)
    for d in reversed(dirs):  # outermost first: deeper files take precedence
        ps = _read_ignore_file(os.path.join(d, ".gitignore"), errors)
        if ps:
            chain.append((_rel_dir(top, d), 0, ps))
    return tuple(chain)


def _walk(top: str, display: str, config: Config, root: str, exclude: PatternSet, out: dict[str, str],
          errors: list[dict[str, str]] | None = None) -> None:
    """Add every non-excluded Python file under directory `top` (absolute) to `out`; a directory
    that cannot be listed is an error entry in `errors`."""
    # Exclude patterns are relative to the config root; outside it, to the directory walked.
    ex_prefix = _rel_dir(top, root) if _is_under(top, root) else ""
    gitignore = config.respect_gitignore
    chain: _Chain = _ancestor_ignores(top, root, errors) if gitignore else ()
    display_prefix = "" if display in ("", ".") else display.rstrip("/" + os.sep) + "/"
    stack: list[tuple[str, str, _Chain]] = [(top, "", chain)]
    while stack:
        abs_dir, rel_dir, chain = stack.pop()
        try:
            with os.scandir(abs_dir) as it:
                entries = list(it)
        except OSError as exc:
            if errors is not None:  # its files are not linted: said, not skipped silently
                from placement_lint.source_text import os_reason

                shown = (display_prefix + rel_dir).rstrip("/") or display
                errors.append({"path": shown, "message": f"cannot read directory: {os_reason(exc)}"})
            continue
        if gitignore:
            for e in entries:
                if e.name == ".gitignore":
                    ps = _read_ignore_file(e.path, errors, display_prefix + rel_dir + e.name)
                    if ps:
                        chain = chain + (("", len(rel_dir), ps),)
                    break
        for e in entries:
            name = e.name
            try:
                is_dir = e.is_dir(follow_symlinks=False)  # symlinked directories are not followed
            except OSError:
                continue
            if is_dir:
                rel = rel_dir + name + "/"
            elif name.endswith(PY_SUFFIXES):
                rel = rel_dir + name
            else:
                continue
            if exclude and exclude._check(ex_prefix + rel, name, is_dir):
                continue
            if chain:
                verdict = None
                for prefix, strip, ps in reversed(chain):  # the deepest ignore file decides first
                    verdict = ps._check(prefix + rel[strip:], name, is_dir)
                    if verdict is not None:
                        break
                if verdict:
                    continue
            if is_dir:
                stack.append((e.path, rel, chain))
            elif not e.is_symlink() or _link_listed(e):
                out.setdefault(e.path, display_prefix + rel)


def _link_listed(e: os.DirEntry) -> bool:
    """Whether a symlinked `*.py` entry is listed: not if it leads to a directory (not followed)
    or nowhere (dangling); a loop, or a link to a FIFO or device, is, for the engine to refuse."""
    try:
        return not stat.S_ISDIR(e.stat().st_mode)  # (e.is_dir() says False for a dangling link)
    except OSError as exc:
        return exc.errno != errno.ENOENT


def discover(paths: Sequence[str | Path], config: Config, errors: list[dict[str, str]] | None = None) -> list[Path]:
    """Python files named by `paths`: directories are expanded recursively to `*.py`/`*.pyi`
    files, honouring `exclude`, `extend_exclude` and (with `respect_gitignore`) `.gitignore`.

    Files named explicitly are always included, whatever the excludes say (a symlink loop too:
    the engine reports it). Returns paths as the user wrote them (relative stays relative),
    sorted and deduplicated. `errors` gets {path, message} for what could not be read on the way
    (a directory that cannot be listed, an unreadable ignore file).
    """
    cwd = os.getcwd()
    root = os.path.abspath(config.root)
    exclude = PatternSet([*config.exclude, *config.extend_exclude])
    found: dict[str, str] = {}  # absolute path -> path as displayed
    for p in paths or (".",):
        text = os.fspath(p)
        absolute = os.path.normpath(os.path.join(cwd, text))
        if os.path.isdir(absolute):
            _walk(absolute, text, config, root, exclude, found, errors)
        elif os.path.exists(absolute) or _is_loop(absolute):
            found.setdefault(absolute, text)
        else:
            raise UsageError(f"{text}: No such file or directory")
    # Sorted as Paths sort (component by component), but on strings: "/" sorts before any name
    # character that way. Sorting Path objects costs ten times more.
    return [Path(p) for p in sorted(set(found.values()), key=lambda p: p.replace("/", "\0"))]
