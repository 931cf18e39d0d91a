"""Module resolution as Python does it, on paths: never importing anything.

A reference as the analyzer wrote it down (`pkg.sub.X`, `.impl.X`, `..parallel.X`, `X`) is
resolved from the file that holds it to the file and qualified name that define it: the longest
dotted prefix that is a module (`pkg/sub.py` or `pkg/sub/__init__.py` under a directory the
importing file could have on its path: its own ancestors first, then the roots of the other files
analysed, which covers src/ layouts and several roots on the command line), then the rest looked
up in that module: a definition there, or an import it re-exports (`from .impl import X`, a star
import), or a submodule. A module is read with `ast` only when a reference passes through it.
"""

from __future__ import annotations

import ast
import os
from functools import lru_cache
from typing import Iterable

#: how many re-exports a reference may pass through (cycles end here too)
MAX_HOPS = 8


@lru_cache(maxsize=8192)
def _isfile(path: str) -> bool:
    return os.path.isfile(path)


class ModuleScan:
    """What a module defines and imports at its top level."""

    __slots__ = ("defs", "imports", "stars", "bases")

    def __init__(self, defs: set[str], imports: dict[str, str], stars: list[str], bases: dict[str, list[str]]):
        self.defs, self.imports, self.stars, self.bases = defs, imports, stars, bases


def scan_module(path: str) -> ModuleScan:
    try:
        with open(path, "rb") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return ModuleScan(set(), {}, [], {})
    defs: set[str] = set()
    bases: dict[str, list[str]] = {}
    imports: dict[str, str] = {}
    stars: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.add(node.name)
                if isinstance(node, ast.ClassDef):
                    bases[node.name] = [ast.unparse(b) for b in node.bases]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defs.update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        imports[a.asname] = a.name
                    else:
                        head = a.name.split(".", 1)[0]
                        imports.setdefault(head, head)
            elif isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                for a in node.names:
                    if a.name == "*":
                        stars.append(mod)
                        continue
                    sep = "" if mod.endswith(".") else "."
                    imports[a.asname or a.name] = f"{mod}{sep}{a.name}" if mod else a.name
            elif isinstance(node, (ast.If, ast.Try)):  # `try: from x import y` / TYPE_CHECKING blocks
                visit(node.body)
                for h in getattr(node, "handlers", ()):
                    visit(h.body)
                visit(node.orelse)

    visit(tree.body)
    return ModuleScan(defs, imports, stars, bases)


class Resolver:
    def __init__(self, files: Iterable[str]):
        """`files`: paths of the files analysed (their package roots are import roots)."""
        self.roots: list[str] = []
        seen: set[str] = set()
        for path in files:
            root = package_root(os.path.abspath(path))
            if root not in seen:
                seen.add(root)
                self.roots.append(root)
        self._scans: dict[str, ModuleScan] = {}

    def scan(self, path: str) -> ModuleScan:
        if path not in self._scans:
            self._scans[path] = scan_module(path)
        return self._scans[path]

    # -- modules --------------------------------------------------------------------------------
    @staticmethod
    def module_file(base: str, parts: list[str]) -> str | None:
        """The file of module `parts` under directory `base`, if there is one."""
        if not parts:
            init = os.path.join(base, "__init__.py")
            return init if _isfile(init) else None
        stem = os.path.join(base, *parts)
        for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
            if _isfile(candidate):
                return candidate
        return None

    def bases_for(self, from_path: str) -> list[str]:
        """Directories an absolute import in `from_path` may be resolved from, nearest first."""
        out = []
        d = os.path.dirname(os.path.abspath(from_path))
        while True:
            out.append(d)
            if not _isfile(os.path.join(d, "__init__.py")):
                break  # the first directory above the package chain: a sys.path root
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        out.extend(r for r in self.roots if r not in out)
        return out

    # -- references -----------------------------------------------------------------------------
    def resolve(self, ref: str, from_path: str, hops: int = 0) -> tuple[str, str] | None:
        """(absolute file, qualified name in it) of what `ref`, written in `from_path`, names."""
        if not ref or hops > MAX_HOPS:
            return None
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


def package_root(path: str) -> str:
    """The directory above a file's package chain (where `import outermost_package` starts)."""
    d = os.path.dirname(path)
    while _isfile(os.path.join(d, "__init__.py")):
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return d
