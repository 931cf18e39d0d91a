"""Project index: the cross-file facts rules need (which classes are ParallelStyles, which of them
leave DTensor without grad placements in a hook, where each style is applied)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from placement_lint import api
from placement_lint.callgraph import MAX_CALL_DEPTH, CallGraphMixin
from placement_lint.facts import WHOLE_FILE_MODES
from placement_lint.resolution import Resolver


@lru_cache(maxsize=4096)
def _package_dirs(directory: str) -> tuple[str, ...]:
    """Names of the enclosing packages of `directory`, outermost first (dirs with __init__.py)."""
    parts: list[str] = []
    d = directory
    while os.path.isfile(os.path.join(d, "__init__.py")):
        parts.append(os.path.basename(d))
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return tuple(reversed(parts))


def module_name(path: str | Path) -> str:
    """Dotted module name of a file, from the packages (dirs with __init__.py) that enclose it."""
    return _module_name(os.path.abspath(path))  # absolute: the cache must not outlive a chdir


@lru_cache(maxsize=16384)
def _module_name(p: str) -> str:
    stem = os.path.splitext(os.path.basename(p))[0]
    pkgs = _package_dirs(os.path.dirname(p))
    parts = list(pkgs) if stem == "__init__" else [*pkgs, stem]
    return ".".join(parts) or stem


class ProjectIndex(CallGraphMixin):
    def __init__(self, files: dict[str, dict[str, Any]], paths: dict[str, str] | None = None,
                 resolver: Resolver | None = None):
        """`files`: facts per shown path; `paths`: the real path of each file discovered (shown ->
        path), analysed or not, so that a reference can be resolved to a file not yet analysed."""
        self.files = files
        if paths is None or any(p not in paths for p in files):
            paths = {**{p: os.path.abspath(p) for p in files}, **(paths or {})}
        self.paths = paths
        # one resolver serves a run's successive indexes: module scans and resolutions are of the
        # files' text, which does not change during a run
        self.resolver = resolver if resolver is not None else Resolver(self.paths.values())
        self.shown = self.resolver.shown_paths(self.paths)
        #: files a reference led to whose facts are missing or partial: the engine analyses them
        #: in full and rebuilds the index
        self.wanted: set[str] = set()
        self.functions: dict[tuple[str, str], dict[str, Any]] = {
            (path, sym): fn for path, facts in files.items() for sym, fn in (facts.get("functions") or {}).items()
        }
        self.modules = {path: module_name(path) for path, facts in files.items() if facts.get("classes") or facts.get("sites")}
        self.classes: dict[str, tuple[str, dict[str, Any]]] = {}
        self.by_name: dict[str, list[str]] = {}
        for path, facts in files.items():
            for c in facts.get("classes", ()):
                fqn = f"{self.modules.get(path, '')}.{c['qualname']}"
                self.classes[fqn] = (path, c)
                self.by_name.setdefault(c["name"], []).append(fqn)
        self._style_cache: dict[str, bool] = {}
        self._resolved: dict[tuple[str, str], str | None] = {}
        self.style_uses: dict[str, int] = {}

    # -- name resolution -----------------------------------------------------------------------
    def locate(self, ref: str, from_path: str) -> tuple[str, str] | None:
        """(shown path, qualified name) of the definition `ref` names, resolved as Python would
        (resolution.Resolver); a file outside the files discovered is shown by its real path."""
        found = self.resolver.resolve(ref, self.paths.get(from_path, from_path))
        if found is None:
            return None
        real, qual = found
        return self.shown.get(real, real), qual

    def may_be_style(self, path: str, qual: str, depth: int = 0) -> bool:
        """Whether the class `qual` of `path`, which the facts do not hold, derives from a
        ParallelStyle (read from its module's syntax, bases resolved in turn)."""
        real = self.paths.get(path, path)
        bases = self.resolver.scan(real).bases.get(qual)
        if not bases or depth > MAX_CALL_DEPTH:
            return False
        for base in bases:
            if base.rsplit(".", 1)[-1] in api.STYLE_BASES:
                return True
            located = self.locate(base, path)
            if located is None:
                continue
            bpath, bqual = located
            fqn = self.class_fqn(bpath, bqual)
            if (fqn in self.classes and self.is_style(fqn)) or self.may_be_style(bpath, bqual, depth + 1):
                return True
        return False

    def want(self, path: str) -> None:
        """Ask for full facts of `path` (unless it has them already)."""
        facts = self.files.get(path)
        if (facts is None or facts.get("mode") not in WHOLE_FILE_MODES) and path in self.paths:
            self.wanted.add(path)

    def resolve(self, ref: str, from_path: str) -> str | None:
        """Fully qualified name of the project class that `ref` (as imported in from_path) names."""
        key = (ref, from_path)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(ref, from_path)
        return self._resolved[key]

    def _resolve(self, ref: str, from_path: str) -> str | None:
        located = self.locate(ref, from_path) if ref else None
        if located is not None:
            path, qual = located
            fqn = self.class_fqn(path, qual)
            if fqn in self.classes:
                return fqn
            if self.may_be_style(path, qual):
                self.want(path)  # a style class in a file (or region) not analysed yet
            return None  # found where Python would find it: no guessing by name
        if not ref or ref.rsplit(".", 1)[-1] not in self.by_name:
            return None  # no project class of that name: the common case, decided in O(1)
        if ref.startswith("."):
            level = len(ref) - len(ref.lstrip("."))
            mod = self.modules.get(from_path) or module_name(from_path)
            pkg = mod.split(".")
            is_init = os.path.basename(from_path) == "__init__.py"
            pkg = pkg if is_init else pkg[:-1]
            base = pkg[: len(pkg) - (level - 1)] if level > 1 else pkg
            ref = ".".join([*base, ref.lstrip(".")]) if base else ref.lstrip(".")
        if ref in self.classes:
            return ref
        # the same class reached through a different package root (e.g. `src.` prefix): suffix match
        suffix = [fqn for fqn in self.by_name.get(ref.rsplit(".", 1)[-1], ()) if fqn.endswith("." + ref) or ref.endswith("." + fqn)]
        if len(suffix) == 1:
            return suffix[0]
        name = ref.rsplit(".", 1)[-1]
        same_file = f"{self.modules.get(from_path, '')}.{name}"
        if same_file in self.classes:
            return same_file
        cands = self.by_name.get(name, [])
        if len(cands) > 1 and "." in ref:
            # re-exported through a package __init__: prefer the definitions under that package
            package = ref.rsplit(".", 1)[0] + "."
            cands = [c for c in cands if c.startswith(package)] or cands
        return cands[0] if len(cands) == 1 else None

    def class_fqn(self, path: str, qualname: str) -> str:
        return f"{self.modules.get(path, module_name(path))}.{qualname}"

    # -- styles ----------------------------------------------------------------------------------
    def is_style(self, fqn: str, _seen: frozenset = frozenset()) -> bool:
        if fqn in self._style_cache:
            return self._style_cache[fqn]
        entry = self.classes.get(fqn)
        result = False
        if entry is not None and fqn not in _seen:
            path, c = entry
            if c.get("torch_style"):
                result = True
            else:
                for base in c.get("bases", ()):
                    target = self.resolve(base, path)
                    if target and self.is_style(target, _seen | {fqn}):
                        result = True
                        break
                    if base.rsplit(".", 1)[-1] in api.STYLE_BASES and target is None:
                        result = True
                        break
        self._style_cache[fqn] = result
        return result

    def torch_base(self, fqn: str, _seen: frozenset = frozenset()) -> str | None:
        """The torch style a project style derives from (`RowwiseParallel` for a subclass of a
        subclass of it), by its canonical name; None for a direct ParallelStyle."""
        entry = self.classes.get(fqn)
        if entry is None or fqn in _seen:
            return None
        path, c = entry
        for base in c.get("bases", ()):
            target = self.resolve(base, path)
            if target is not None:
                found = self.torch_base(target, _seen | {fqn})
                if found:
                    return found
            else:
                name = base.rsplit(".", 1)[-1]
                if name in api.STYLES or name in api.STYLE_ALIASES:
                    return api.STYLE_ALIASES.get(name, name)
        return None

    def leak(self, fqn: str, _seen: frozenset = frozenset(), _input_layout: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """(path, exit site) of a bare to_local()/full_tensor() in the style's hooks, own or inherited."""
        entry = self.classes.get(fqn)
        if entry is None or fqn in _seen:
            return None
        if not _seen:
            _input_layout = api.STYLE_DEFAULT_INPUT_LAYOUT.get(self.torch_base(fqn) or "")
        path, c = entry
        sites = self.files[path]["sites"]
        for i in c.get("bare_exits", ()):
            site = sites[i]
            # only a local tensor the hook hands on (its return value) leaves DTensor for the
            # module's consumers; a side copy stored on the module does not
            if site.get("guard") or not any(e == "returned" for e in site.get("escapes", ())):
                continue
            if (_input_layout == "S" and site.get("placements") is None
                    and site.get("symbol", "").rsplit(".", 1)[-1] in api.STYLE_INPUT_HOOKS):
                continue  # an input that arrives Shard (the torch base's default): Shard is its right label
            return path, site
        for base in c.get("bases", ()):
            target = self.resolve(base, path)
            if target:
                found = self.leak(target, _seen | {fqn}, _input_layout)
                if found:
                    return found
        return None

    def leaky_styles(self) -> list[str]:
        return [fqn for fqn in self.classes if self.is_style(fqn) and self.leak(fqn)]

    def leaky_style_names(self) -> set[str]:
        return {fqn.rsplit(".", 1)[-1] for fqn in self.leaky_styles()}

    def count_style_uses(self) -> None:
        """How many use sites each project style has (a style never applied is reported at its hook)."""
        self.style_uses = {}
        for path, facts in self.files.items():
            for site in facts.get("sites", ()):
                if site["kind"] == "style_candidate" and not site.get("applied_elsewhere"):
                    fqn = self.resolve_style(site, path)
                    if fqn is not None and self.is_style(fqn):
                        self.style_uses[fqn] = self.style_uses.get(fqn, 0) + 1

    def iter_files(self) -> Iterable[tuple[str, dict[str, Any]]]:
        return self.files.items()

    # -- styles reached through helpers ------------------------------------------------------------
    def resolve_style(self, site: dict[str, Any], from_path: str, depth: int = 0) -> str | None:
        """The project style class a style_candidate site instantiates: directly (`NoParallel()`)
        or through a helper that returns one (`gate_style()`)."""
        ref = site["ref"]
        if not (depth or site.get("plan_key") or site.get("via_call")) and ref.rsplit(".", 1)[-1] not in self.by_name:
            # a call outside a plan naming no class the facts hold: not followed through modules
            # (most capitalised calls are not styles; a style's use sits at a plan entry)
            return None
        fqn = self.resolve(ref, from_path)
        if fqn is not None or depth > MAX_CALL_DEPTH:
            return fqn
        if not (site.get("via_call") or depth):
            return None  # a class that is not a style: no helper to look into
        fn = self.function(ref, from_path, site)
        if fn is None:
            return None
        path, _, info = fn
        for inner in info.get("returns_styles", ()):
            found = self.resolve_style({"ref": inner}, path, depth + 1)
            if found is not None:
                return found
        return None

    def follow_all(self) -> None:
        """Resolve every reference the rules will ask about, so that `wanted` lists the files
        whose full facts they need before they run."""
        for path, facts in self.files.items():
            for site in facts.get("sites", ()):
                if site["kind"] == "exit" and site.get("calls") and not site.get("meets") and not site.get("guard"):
                    self.call_evidence(site["calls"], path)
                elif site["kind"] == "style_candidate":
                    self.resolve_style(site, path)
