"""Module resolution as Python does it, on paths: never importing anything.

A reference as the analyzer wrote it down (`pkg.sub.X`, `.impl.X`, `..parallel.X`, `X`) is
resolved from the file that holds it to the file and qualified name that define it: the longest
dotted prefix that is a module (`pkg/sub.py` or `pkg/sub/__init__.py` under a directory the
importing file could have on its path: its own ancestors first, then the roots of the other files
analysed, which covers src/ layouts and several roots on the command line), then the rest looked
up in that module: a definition there, or an import it re-exports (`from .impl import X`, a star
import), or a submodule. A module is read (its top level, off the text) only when a reference passes through it.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

#: how many re-exports a reference may pass through (cycles end here too)
MAX_HOPS = 8


class _FileCache:
    """os.path.isfile answers for one run (a Resolver's lifetime): the tree does not change
    under a run, but it may between runs of a long-lived process (an editor, the API)."""

    def __init__(self) -> None:
        self.known: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        found = self.known.get(path)
        if found is None:
            found = self.known[path] = os.path.isfile(path)
        return found


class ModuleScan:
    """What a module defines and imports at its top level."""

    __slots__ = ("defs", "imports", "stars", "bases")

    def __init__(self, defs: set[str], imports: dict[str, str], stars: list[str], bases: dict[str, list[str]]):
        self.defs, self.imports, self.stars, self.bases = defs, imports, stars, bases


_TOP_DEF = re.compile(r"(?:async\s+def|def|class)\s+(\w+)")
_TOP_ASSIGN = re.compile(r"(\w+)\s*(?::[^=\n]*)?=(?!=)")
_FROM = re.compile(r"from\s+([.\w]+)\s+import\s+(.*)", re.DOTALL)
_IMPORT = re.compile(r"import\s+(.*)", re.DOTALL)
_GUARD = re.compile(r"(?:try|except|else|finally|if|elif)\b")


def _statements(text: str):
    """(indent, text) of each statement at the top level or in a top-level `try`/`if` block
    (brackets and backslashes joined), skipping lines inside triple-quoted strings. Lines of
    function and class bodies are passed over without being looked at further."""
    lines = text.splitlines()
    guarded = False
    quote = ""  # the triple quote of a string the previous lines left open
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if quote or '"""' in line or "'''" in line:
            # triple-quoted strings, tracked line by line (str.count, no regex over the file)
            was_inside = bool(quote)
            for q in ('"""', "'''"):
                if (not quote or quote == q) and line.count(q) % 2:
                    quote = "" if quote else q
            if was_inside:
                i += 1
                continue
        if not line:
            i += 1
            continue
        first = line[0]
        if first in " \t":
            if not guarded:
                i += 1
                continue
            stripped = line.lstrip(" \t")
            if not stripped.startswith(("from ", "import ")):
                i += 1
                continue
            indent = len(line) - len(stripped)
        elif first == "#":
            i += 1
            continue
        else:
            stripped, indent = line, 0
            guarded = bool(_GUARD.match(stripped))
        parts = [stripped]
        depth = stripped.count("(") - stripped.count(")") + stripped.count("[") - stripped.count("]")
        while (depth > 0 or parts[-1].rstrip().endswith("\\")) and i + 1 < n:
            i += 1
            nxt = lines[i].split("#", 1)[0]
            parts.append(nxt.strip())
            depth += nxt.count("(") - nxt.count(")") + nxt.count("[") - nxt.count("]")
        yield indent, " ".join(p.rstrip("\\").strip() for p in parts)
        i += 1


def _split_top(text: str) -> list[str]:
    """Comma-separated items at bracket depth 0."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def scan_module(path: str) -> ModuleScan:
    """A module's top level read off its text (no parse: this runs for every module a reference
    passes through, large ones included): definitions, imports (also those under a top-level
    `try`/`if`, the usual optional-dependency guards), star imports and class bases."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ModuleScan(set(), {}, [], {})
    defs: set[str] = set()
    bases: dict[str, list[str]] = {}
    imports: dict[str, str] = {}
    stars: list[str] = []
    for indent, stmt in _statements(text):
        m = _TOP_DEF.match(stmt)
        if m and indent == 0:
            defs.add(m.group(1))
            if stmt.startswith("class"):
                head = stmt[m.end():].strip()
                if head.startswith("("):
                    inner = head[1 : head.rfind(")")] if ")" in head else head[1:]
                    bases[m.group(1)] = [b for b in _split_top(inner) if b and "=" not in b and not b.startswith("*")]
            continue
        m = _FROM.match(stmt)
        if m:
            mod, names = m.group(1), m.group(2).strip().strip("()")
            for item in _split_top(names):
                name, _, alias = item.partition(" as ")
                name, alias = name.strip(), alias.strip()
                if name == "*":
                    stars.append(mod)
                elif name.isidentifier():
                    sep = "" if mod.endswith(".") else "."
                    imports[alias or name] = f"{mod}{sep}{name}"
            continue
        m = _IMPORT.match(stmt)
        if m:
            for item in _split_top(m.group(1)):
                name, _, alias = item.partition(" as ")
                name, alias = name.strip(), alias.strip()
                if alias:
                    imports[alias] = name
                elif name:
                    head = name.split(".", 1)[0]
                    imports.setdefault(head, head)
            continue
        m = _TOP_ASSIGN.match(stmt)
        if m and indent == 0:
            defs.add(m.group(1))
    return ModuleScan(defs, imports, stars, bases)


class Resolver:
    def __init__(self, files: Iterable[str], stored: dict[str, list] | None = None):
        """`files`: paths of the files analysed (their package roots are import roots).
        `stored`: module scans of an earlier run, {path: [mtime_ns, size, defs, imports, stars,
        bases]}, used while a file's stat matches; the scans of this run are left there too."""
        self.stored = stored if stored is not None else {}
        self.stored_changed = False
        self.isfile = _FileCache()
        self._roots_of: dict[str, str] = {}
        self.roots: list[str] = []
        self._shown: tuple[tuple[int, int], dict[str, str]] | None = None
        seen: set[str] = set()
        for directory in dict.fromkeys(os.path.dirname(p if os.path.isabs(p) else os.path.abspath(p)) for p in files):
            root = self.package_root_of_dir(directory)
            if root not in seen:
                seen.add(root)
                self.roots.append(root)
        self._scans: dict[str, ModuleScan] = {}
        self._memo: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._modules: dict[tuple, str | None] = {}  # module_file's memo

    def package_root_of_dir(self, d: str) -> str:
        """The directory above `d`'s package chain (where `import outermost_package` starts)."""
        if d not in self._roots_of:
            root = d
            while self.isfile(os.path.join(root, "__init__.py")):
                parent = os.path.dirname(root)
                if parent == root:
                    break
                root = parent
            self._roots_of[d] = root
        return self._roots_of[d]

    def shown_paths(self, paths: dict[str, str]) -> dict[str, str]:
        """{real path: shown path}, the inverse of the engine's map, built once per run."""
        key = (id(paths), len(paths))
        if self._shown is None or self._shown[0] != key:
            self._shown = (key, {real: shown for shown, real in paths.items()})
        return self._shown[1]

    def scan(self, path: str) -> ModuleScan:
        if path not in self._scans:
            try:
                st = os.stat(path)
                stamp = [st.st_mtime_ns, st.st_size]
            except OSError:
                stamp = None
            entry = self.stored.get(path)
            if stamp is not None and isinstance(entry, list) and len(entry) == 6 and entry[:2] == stamp:
                try:
                    self._scans[path] = ModuleScan(set(entry[2]), dict(entry[3]), list(entry[4]), dict(entry[5]))
                    return self._scans[path]
                except (TypeError, ValueError):
                    pass  # a damaged entry: scan again
            scan = self._scans[path] = scan_module(path)
            if stamp is not None:
                self.stored[path] = [*stamp, sorted(scan.defs), scan.imports, scan.stars, scan.bases]
                self.stored_changed = True
        return self._scans[path]

    # -- modules --------------------------------------------------------------------------------
    def module_file(self, base: str, parts: list[str]) -> str | None:
        """The file of module `parts` under directory `base`, if there is one (memoised: every
        reference tries each import root and each dotted prefix, mostly the same ones)."""
        key = (base, *parts)
        if key in self._modules:
            return self._modules[key]
        found = None
        if not parts:
            init = os.path.join(base, "__init__.py")
            found = init if self.isfile(init) else None
        else:
            stem = os.path.join(base, *parts)
            for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
                if self.isfile(candidate):
                    found = candidate
                    break
        self._modules[key] = found
        return found

    def bases_for(self, from_path: str) -> list[str]:
        """Directories an absolute import in `from_path` may be resolved from, nearest first."""
        d = os.path.dirname(os.path.abspath(from_path))
        root = self.package_root_of_dir(d)  # the first directory above the package chain
        out = [d]
        while d != root:
            d = os.path.dirname(d)
            out.append(d)
        out.extend(r for r in self.roots if r not in out)
        return out

    # -- references -----------------------------------------------------------------------------
    def resolve(self, ref: str, from_path: str, hops: int = 0) -> tuple[str, str] | None:
        """(absolute file, qualified name in it) of what `ref`, written in `from_path`, names."""
        if not ref or hops > MAX_HOPS:
            return None
        if hops == 0:
            key = (ref, from_path)
            if key not in self._memo:
                self._memo[key] = self._resolve(ref, from_path, 0)
            return self._memo[key]
        return self._resolve(ref, from_path, hops)

    def _resolve(self, ref: str, from_path: str, hops: int) -> tuple[str, str] | None:
        from_path = os.path.abspath(from_path)
        level = len(ref) - len(ref.lstrip("."))
        parts = [p for p in ref.lstrip(".").split(".") if p]
        if not parts:
            return None
        if level:
            base = os.path.dirname(from_path)
            for _ in range(level - 1):
                base = os.path.dirname(base)
            bases = [base]
        else:
            if len(parts) == 1:
                return self.lookup(from_path, parts, hops)  # a name of this very module
            bases = self.bases_for(from_path)
        for base in bases:
            # the longest prefix that is a module; the rest are names inside it
            for k in range(len(parts) - 1, -1, -1):
                if k == 0 and not level:
                    break
                mod = self.module_file(base, parts[:k])
                if mod is not None:
                    found = self.lookup(mod, parts[k:], hops + 1)
                    if found is not None:
                        return found
        return None

    def lookup(self, module: str, names: list[str], hops: int) -> tuple[str, str] | None:
        """`names` (X, or X.method) looked up in `module`'s top level."""
        if not names or hops > MAX_HOPS:
            return None
        head = names[0]
        scan = self.scan(module)
        if head in scan.defs:
            return module, ".".join(names)
        if head in scan.imports:
            target = scan.imports[head]
            rest = ".".join(names[1:])
            return self.resolve(f"{target}.{rest}" if rest else target, module, hops + 1)
        if os.path.basename(module) == "__init__.py":
            sub = self.module_file(os.path.dirname(module), [head])
            if sub is not None:
                return self.lookup(sub, names[1:], hops + 1) if len(names) > 1 else None
        for star in scan.stars:
            found = self.resolve(f"{star}.{'.'.join(names)}" if not star.endswith(".") else f"{star}{'.'.join(names)}", module, hops + 1)
            if found is not None:
                return found
        return None


class NoResolver:
    """A Resolver that resolves nothing: the index of one file seen alone (fact_store.alone_has_findings)."""

    stored_changed = False

    def shown_paths(self, paths: dict[str, str]) -> dict[str, str]:
        return {}

    def resolve(self, ref: str, from_path: str) -> None:
        return None

    def scan(self, path: str) -> ModuleScan:
        return ModuleScan(set(), {}, [], {})
