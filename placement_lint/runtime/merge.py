"""Merge runtime verdicts into static findings; add the runtime-only findings. No torch here.

Matching a static finding to runtime sites:
* by file:line — the static finding's line is where the flagged call/subscript starts, and a
  site's line is the user frame that made the call (DTP101, DTP201);
* DTP102 (style applied in a plan): by the finding's `related` locations (the hook's bare
  `to_local()`) and by module path — the plan key written on the finding's line
  (`"router.gate": NoParallel()`) against the module path of hook sites (`layers.0.router.gate`);
* DTP103 (`local_map(`): by the function handed to local_map, which the monitor records for the
  conversions local_map makes on the user's behalf; DTP103 on a config object
  (`cfg.tok_embeddings.sharding_config = ShardingConfig(local_map=LocalMapConfig(...))`, handed to
  a generic local_map elsewhere): by the module path the assignment names (`tok_embeddings`)
  against the module path of local_map sites, as for DTP102. When several such findings name the
  same module (other models' sharding files in the analysed tree, an override), the run cannot
  tell which config was in effect: they are `inconclusive`, and their sites stay unclaimed.

File paths: the ranks may import another copy of the analysed package (unpacked wheel vs
site-packages, checkout vs container path). A runtime file that is not an analysed file is taken
for the analysed file with the same path relative to its top-level package when the two are
byte-identical (`PathIndex`); same package-relative path with other contents never matches, and
`confirm` warns about it.

Runtime-only findings (codes reserved for the runtime checker):
  DTP901 diverging-replicated-gradient   a replicated parameter's gradient differs across ranks
  DTP902 double-counted-gradient         Partial label on a gradient every rank computed in full
  DTP903 unflagged-local-conversion      a DTensor exit whose gradient contradicts its label,
                                         at a line the static pass did not flag
  DTP904 reference-gradient-mismatch     (--reference) a parameter gradient differs from the
                                         one-rank run of the same harness
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import importlib.util
import os
import re
from collections.abc import Iterable

from placement_lint.findings import Confidence, Finding, Related, Report
from placement_lint.runtime.verdicts import SEVERITY
from placement_lint.runtime.site_ids import split_site_id


def _runtime_rules() -> dict[str, str]:
    from placement_lint.rule import all_rules

    return {r.CODE: r.SLUG for r in all_rules() if r.RUNTIME_ONLY}


#: code -> slug of the runtime-only rules (rules/dtp90*.py)
RUNTIME_RULES = _runtime_rules()
BAD = ("confirmed", "mixed", "double-count")
EXIT_APIS = ("to_local", "full_tensor")

_PLAN_KEY = re.compile(r"""["']([A-Za-z0-9_.*\-]+)["']\s*:""")
_LOCAL_MAP_FN = re.compile(r"local_map\(\s*([A-Za-z_][\w.]*)\s*[,)]")


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


def _module_matches(module: str, key: str) -> bool:
    """Plan keys are relative to the module parallelize_module was applied to; the runtime path is
    relative to the model the harness called: match on a dotted suffix (wildcards allowed)."""
    if not module:
        return False
    parts, kparts = module.split("."), key.split(".")
    return len(kparts) <= len(parts) and all(
        fnmatch.fnmatchcase(p, k) for p, k in zip(parts[-len(kparts):], kparts))


def _lm_file(local_map: str) -> str:
    """The file of the function a local_map site names: "FILE:FIRSTLINE:NAME|argN" -> FILE."""
    head = local_map.split("|")[0].rpartition(":")[0]  # drop NAME
    return head.rpartition(":")[0]  # drop FIRSTLINE


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


def path_index(report: Report, results: list[dict], cwd: str) -> PathIndex:
    """The PathIndex of this report's files and the files the ranks ran."""
    analysed = [f.path for f in report.findings] + [r.path for f in report.findings for r in f.related]
    loaded = [p for r in results for p in (r.get("loaded_files") or ())]
    return PathIndex(cwd, analysed, _runtime_paths(_all_sites(results)) + loaded)


def _runtime_paths(sites: list[dict]) -> list[str]:
    """The files the ranks ran that sites name: the site's own, the local_map'd function's."""
    out = [s.get("path") or "" for s in sites]
    out += [_lm_file(s["local_map"]) for s in sites if s.get("local_map")]
    return out


def watch_lines(report: Report, cwd: str) -> list[tuple[str, int]]:
    """(path, line) of every static finding, for the monitor (slices there are recorded), plus the
    same lines in a byte-identical copy of the package that this interpreter would import instead
    (the ranks then run that copy: see PathIndex)."""
    index = PathIndex(cwd)
    watch = {(_abs(f.path, cwd), f.line) for f in report.findings}
    installed: dict[str, str | None] = {}  # top-level package name -> directory holding it
    for path, line in sorted(watch):
        rel = index.package_relative(path)
        if rel is None:
            continue
        name = rel.split(os.sep)[0]
        if name not in installed:
            installed[name] = _import_root(name)
        root = installed[name]
        if root is None:
            continue
        other = os.path.normpath(os.path.join(root, rel))
        if other != path and os.path.isfile(other) and index.digest(other) == index.digest(path):
            watch.add((other, line))
    return sorted(watch)


def _import_root(name: str) -> str | None:
    """The directory the top-level package `name` is imported from here, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.path.dirname(os.path.abspath(locations[0])) if len(locations) == 1 else None


# DTP103 on a config object ---------------------------------------------------------------------
#: local_map forms matched by the function handed to local_map (the call names it)
_FUNCTION_FORMS = {"local_map", "partial"}
#: roots of an assignment target that name the model/config being set up, not a module
_GENERIC_ROOTS = {"self", "config", "cfg", "conf", "model", "model_config", "model_cfg", "args", "m", "c"}
_CONFIG_PART = re.compile(r"^_*(?:\w+_)?(?:config|cfg|conf|configs|sharding|local_map|plan)$")
_CONFIG_SUFFIX = re.compile(r"_(?:config|cfg|conf)$")


def _callee_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _target_parts(node: ast.AST) -> list[str] | None:
    """`config.layers[0].moe.sharding_config` -> [config, layers, 0, moe, sharding_config]."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            idx = node.slice
            parts.append(str(idx.value) if isinstance(idx, ast.Constant) and isinstance(idx.value, (int, str)) else "*")
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return None  # a call or an expression at the root: no stable path


def module_key_of_target(target: ast.AST) -> str | None:
    """The module path an assignment target configures, matched as a dotted suffix of runtime
    module paths: drop the root variable (the config or model being set up, and generic names
    after it) and trailing config attributes. `config.tok_embeddings.sharding_config` ->
    `tok_embeddings`; `model.tok_embeddings._sharding_config` -> `tok_embeddings`;
    `config.layers[i].moe.sharding_config` -> `layers.*.moe`; `inner_attention_cfg.sharding_config`
    -> `inner_attention` (a root named after its module); `config.sharding_config` -> None."""
    parts = _target_parts(target)
    if not parts:
        return None
    root, rest = parts[0], parts[1:]
    while rest and _CONFIG_PART.match(rest[-1]):
        rest.pop()
    while rest and rest[0] in _GENERIC_ROOTS:  # self.config.norm...: still the object being set up
        rest.pop(0)
    if not rest and root not in _GENERIC_ROOTS and _CONFIG_SUFFIX.search(root):
        named = _CONFIG_SUFFIX.sub("", root)  # inner_attention_cfg -> inner_attention
        if not _CONFIG_PART.match(named) and named not in _GENERIC_ROOTS:  # but sharding_config: nothing
            rest = [named]
    if not rest or all(p == "*" for p in rest):
        return None
    return ".".join(rest)


def call_start(tree: ast.AST | None, line: int, column: int) -> tuple[int, int]:
    """(line, 1-based column) where the call holding position (line, column) starts: a finding
    about an argument (`use_local_input=True`, `in_grad_placements=...`) starts at that argument,
    while the monitor records the call. The position itself when no call holds it."""
    if tree is None:
        return line, column
    best = None
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call) or n.end_lineno is None:
            continue
        start, end = (n.lineno, n.col_offset + 1), (n.end_lineno, (n.end_col_offset or 0) + 1)
        if start < (line, column) <= end and (best is None or start > best):
            best = start  # the innermost call that holds the argument
    return best or (line, column)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def local_map_form(tree: ast.AST, line: int, column: int) -> tuple[str, str | None]:
    """What the local_map call starting at `line` (1-based `column`) is matched by.

    ("function", NAME): local_map is handed the function itself (`local_map(fn, ...)`,
    `partial(local_map, fn, ...)`); NAME is None for the decorator form or a function given as
    an expression. ("config", KEY): a config object (`LocalMapConfig(...)`) that generic code
    hands to local_map later; KEY is the module path the enclosing assignment (or dict key)
    configures, None when there is none.
    """
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == line]
    if not calls:
        return "function", None
    at = [n for n in calls if n.col_offset == column - 1]
    named = [n for n in calls if _callee_name(n) in _FUNCTION_FORMS or _callee_name(n) == "LocalMapConfig"]
    call = (at or named or calls)[0]
    callee = _callee_name(call)
    if callee in _FUNCTION_FORMS:
        fn_pos = 1 if callee == "partial" else 0
        fn = call.args[fn_pos] if len(call.args) > fn_pos else next(
            (k.value for k in call.keywords if k.arg == "func"), None)
        return "function", _dotted_name(fn) if fn is not None else None
    parents = _parents(tree)
    child: ast.AST = call
    node = parents.get(call)
    while node is not None and not isinstance(node, ast.stmt):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if v is child and isinstance(k, ast.Constant) and isinstance(k.value, str):
                    return "config", k.value  # {"tok_embeddings": LocalMapConfig(...)}: a plan-like key
        child, node = node, parents.get(node)
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        return "config", module_key_of_target(node.targets[0])
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return "config", module_key_of_target(node.target)
    return "config", None


def _all_sites(results: list[dict]) -> list[dict]:
    out = []
    for res in results:
        for s in res.get("sites", []):
            out.append(dict(s, harness=res.get("harness")))
    return out


class _Matcher:
    """Matches static findings to the sites of one merge: the path mapping, the sites by
    location and the parsed analysed files are computed once."""

    def __init__(self, sites: list[dict], cwd: str, paths: PathIndex) -> None:
        self.sites, self.cwd, self.paths = sites, cwd, paths
        self.by_loc: dict[tuple[str, int], list[dict]] = {}
        for s in sites:
            self.by_loc.setdefault((paths.canon(s["path"]), s["line"]), []).append(s)
        self.lm_sites = [s for s in sites if s.get("local_map")]
        #: harness -> analysed files its ranks imported (absent in results without the field)
        self.loaded: dict[str, set[str]] = {}
        self._trees: dict[str, ast.AST | None] = {}
        #: id(finding) -> (module key, sites matched by that key only): DTP103 on a config object
        self.by_module: dict[int, tuple[str, list[dict]]] = {}
        #: id(finding) -> the plan keys of a DTP102's entry (for a not-reached finding's reason)
        self.plan_keys: dict[int, list[str]] = {}

    def imported(self, fpath: str, site: dict) -> bool:
        """Whether the ranks of the site's harness imported the finding's file (a key written in a
        file the run never imported names some other model's module). Unknown: yes."""
        loaded = self.loaded.get(site.get("harness"))
        return loaded is None or fpath in loaded

    def tree(self, path: str) -> ast.AST | None:
        if path not in self._trees:
            try:
                with open(path, "rb") as fh:
                    self._trees[path] = ast.parse(fh.read(), filename=path)
            except (OSError, SyntaxError, ValueError):
                self._trees[path] = None
        return self._trees[path]

    def match(self, f: Finding) -> list[dict]:
        cwd, paths = self.cwd, self.paths
        fpath = _abs(f.path, cwd)
        matched = list(self.by_loc.get((fpath, f.line), ()))
        if f.code == "DTP102":
            for r in f.related:
                matched += self.by_loc.get((_abs(r.path, cwd), r.line), ())
            line = f.line if _PLAN_KEY.search(_source_lines(fpath, f.line, 1)) else call_start(self.tree(fpath), f.line, f.column)[0]
            keys = _PLAN_KEY.findall(_source_lines(fpath, line, 1))
            if not keys:  # the key may sit on the line above a long style call
                keys = _PLAN_KEY.findall(_source_lines(fpath, max(1, line - 1), 2))
            self.plan_keys[id(f)] = keys
            for key in keys:
                matched += [s for s in self.sites
                            if s.get("hook") in ("pre", "post") and _module_matches(s.get("module", ""), key)
                            and self.imported(fpath, s)]
        if f.code == "DTP103":
            tree = self.tree(fpath)
            if tree is not None:
                form, name = local_map_form(tree, *call_start(tree, f.line, f.column))
            else:  # unparsable here (newer syntax than this Python): the call's text
                m = _LOCAL_MAP_FN.search(_source_lines(fpath, f.line, 6))
                form, name = "function", (m.group(1).split(".")[-1] if m else None)
            if form == "config":
                # LocalMapConfig(...) installed on a module's config; generic code calls local_map
                by_key = [s for s in self.lm_sites if name and _module_matches(s.get("module", ""), name)
                          and self.imported(fpath, s)]
                if by_key:
                    self.by_module[id(f)] = (name or "", by_key)
                matched += by_key
            for s in self.lm_sites if form == "function" else ():
                fn_name = s["local_map"].split("|")[0].rpartition(":")[2]
                # by the function's name; without one (decorator form), by the function's file
                if (fn_name == name) if name else paths.canon(_lm_file(s["local_map"])) == fpath:
                    matched.append(s)
        seen, out = set(), []
        for s in matched:
            key = (s.get("harness"), s["id"])
            if key not in seen:
                seen.add(key)
                out.append(s)
        return out


def match_sites(f: Finding, sites: list[dict], cwd: str, paths: PathIndex | None = None) -> list[dict]:
    """The runtime sites static finding `f` is about (see the module docstring)."""
    if paths is None:
        paths = PathIndex(cwd, [f.path] + [r.path for r in f.related], _runtime_paths(sites))
    return _Matcher(sites, cwd, paths).match(f)


def _verdict_of(sites: list[dict]) -> tuple[str, dict, dict | None]:
    """Worst verdict among the exits (the cause); wrappers like from_local only if no exit."""
    exits = [s for s in sites if s["api"] != "from_local"] or sites
    best = max(exits, key=lambda s: (SEVERITY.get(s["verdict"], 0), s["evidence"].get("max_rel_diff") or 0))
    ev = dict(best["evidence"])
    ev["site"] = f"{best['path']}:{best['line']}"
    ev["harness"] = best.get("harness")
    if len(sites) > 1:
        ev["sites"] = [
            {"site": f"{s['path']}:{s['line']}", "api": s["api"], "module": s.get("module", ""),
             "hook": s.get("hook", ""), "verdict": s["verdict"], "harness": s.get("harness")}
            for s in sites
        ]
    return best["verdict"], ev, best


def merge(report: Report, results: list[dict], cwd: str, *, reference: bool = False,
          paths: PathIndex | None = None) -> Report:
    sites = _all_sites(results)
    if paths is None:
        paths = path_index(report, results, cwd)
    matcher = _Matcher(sites, cwd, paths)
    for res in results:
        if isinstance(res.get("loaded_files"), list):
            matcher.loaded[res.get("harness")] = {paths.canon(p) for p in res["loaded_files"]}
    matches = [(f, matcher.match(f)) for f in report.findings]
    # sites matched by module name only (DTP103 on a config object), and which findings claim them
    claims: dict[tuple, list[Finding]] = {}
    for f, _m in matches:
        for s in matcher.by_module.get(id(f), ("", []))[1]:
            claims.setdefault((s.get("harness"), s["id"]), []).append(f)
    used: set[tuple] = set()
    for f, m in matches:
        if not m:
            f.runtime = {"verdict": "not-reached", "evidence": _not_reached(f, matcher, results)}
            continue
        verdict, ev, _best = _verdict_of(m)
        key, named = matcher.by_module.get(id(f), ("", []))
        rivals = sorted({f"{g.path}:{g.line}" for s in named for g in claims[(s.get("harness"), s["id"])] if g is not f})
        if rivals:
            # Several configs name this module (other models' sharding files, an override): the run
            # shows that the module's local_map ran, not which config was in effect. No verdict,
            # and the sites stay unclaimed so that a bad one is still reported on its own (DTP903).
            f.runtime = {"verdict": "inconclusive", "evidence": dict(ev, detail=(
                f"matched by module path `{key}` only, which {len(rivals)} other finding(s) also configure "
                f"({', '.join(rivals[:3])}{', ...' if len(rivals) > 3 else ''}): the run does not show which "
                f"config was in effect; the sites' verdict: {verdict}"), site_verdict=verdict, module_key=key,
                other_findings=rivals)}
            continue
        for s in m:
            used.add((s.get("harness"), s["id"]))
        f.runtime = {"verdict": verdict, "evidence": ev}
        _relate_sites(f, m, paths, cwd)
    statically_flagged_lines = {(_abs(f.path, cwd), f.line) for f in report.findings}
    extra: list[Finding] = []
    for s in sites:
        if (s.get("harness"), s["id"]) in used or s["verdict"] not in BAD:
            continue
        if (paths.canon(s["path"]), s["line"]) in statically_flagged_lines:
            continue
        related: list[Related] = []
        if s["verdict"] == "double-count" and s["evidence"].get("reduced_again_by"):
            code = "DTP902"
            dim = s["evidence"].get("mesh_dim")
            n = len(s["evidence"].get("group_ranks") or [])
            _api, rpath, rline, *_ = split_site_id(s["evidence"]["reduced_again_by"])
            rpath = paths.canon(rpath) if not _unreal(rpath) else rpath
            msg = (f"`from_local(..., [Replicate()])` all-reduces this branch's gradient in its backward, and "
                   f"`{_api}` at {_rel(rpath, cwd)}:{rline} labels the same local tensor's gradient Partial, "
                   f"which sums it again: the branch counts {n}x over mesh dim `{dim}` (hand this branch the "
                   f"DTensor instead of a local tensor, so that it is reduced once)")
            if rline.isdigit() and not _unreal(rpath):
                related.append(Related(_rel(rpath, cwd), int(rline),
                                       "the Partial label that reduces this branch's gradient a second time"))
        elif s["verdict"] == "double-count":
            code = "DTP902"
            dim = s["evidence"].get("mesh_dim")
            n = len(s["evidence"].get("group_ranks") or [])
            msg = (f"`{s['api']}` labels the gradient Partial but every rank of mesh dim `{dim}` computed the "
                   f"same full gradient: the reduction counts it {n}x (drop grad_placements or use Replicate())")
        elif s["api"] in EXIT_APIS or s.get("local_map"):
            code = "DTP903"
            dim = s["evidence"].get("mesh_dim")
            msg = (f"the gradient reaching this `{s['api']}` differs across the ranks of mesh dim `{dim}` "
                   f"but is labelled Replicate ({s['verdict']}); pass grad_placements=(Partial(),)")
        else:
            continue  # slices and from_local symptoms: their cause is reported at an exit
        # reported in the analysed copy when the ranks ran a byte-identical one (review bots
        # annotate the files they were given)
        extra.append(_finding(code, paths.canon(s["path"]), s["line"], msg, cwd, s.get("function", ""),
                              {"verdict": s["verdict"], "evidence": dict(s["evidence"], harness=s.get("harness"))}))
        extra[-1].related.extend(related)
    for res in results:
        for p in res.get("params", []):
            loc = p.get("location") or {}
            path, line = loc.get("path") or res.get("harness", "?").rpartition(":")[0], loc.get("line") or 1
            if p.get("status") == "diverging":
                msg = (f"gradient of replicated parameter `{p['name']}` ({', '.join(p.get('placements') or [])}) "
                       f"differs across the ranks of mesh dim `{p.get('mesh_dim')}` (max rel diff "
                       f"{p.get('max_rel_diff')}): the replicas drift apart at the next optimizer step")
                extra.append(_finding("DTP901", path, line, msg, cwd, p["name"],
                                      {"verdict": "confirmed", "evidence": _param_evidence(p, res)}))
            elif reference and p.get("matches_reference") is False:
                worst = max((v for v in (p.get("reference_rel_diff") or {}).values() if isinstance(v, (int, float))),
                            default=None)
                tol = ("" if p.get("reference_tolerance") is None else
                       f"; tolerance {p['reference_tolerance']} (--reference-rtol)" if p.get("tolerance_source") else
                       f"; tolerance {p['reference_tolerance']} for {p['compute_dtype']} compute")
                scales = list((p.get("reference_scale") or {}).values())
                uniform = (f", {scales[0][0]:.3g}x the reference on every rank"
                           if scales and all(v[1] > 0.99 and abs(v[0] - scales[0][0]) < 1e-3 for v in scales) else "")
                first = next((loc for loc in res.get("localization") or () if p["name"] in loc.get("wrong_params", ())
                              or p["name"].startswith(loc["module"] + ".") or not loc["module"]),
                             next(iter(res.get("localization") or ()), None))
                msg = (f"gradient of parameter `{p['name']}` differs from the one-rank reference run "
                       f"(max rel diff {worst}{tol}){uniform}: a collective is missing or runs twice"
                       + (f"; {first['summary']}" if first else ""))
                extra.append(_finding("DTP904", path, line, msg, cwd, p["name"],
                                      {"verdict": "confirmed", "evidence": _param_evidence(p, res)}))
    if reference:
        for res in results:
            extra.extend(_localized(res, paths, cwd))
    report.findings.extend(extra)
    report.findings.sort(key=lambda f: f.sort_key())
    return report


def _localized(res: dict, paths: PathIndex, cwd: str) -> list[Finding]:
    """DTP904 where a wrong gradient first appears (--reference) and no site inside the module
    was found bad (a gradient wrong identically on every rank): at the module's forward, with the
    DTensor entries and exits inside it as related locations."""
    from placement_lint.runtime.localize import site_list

    out = []
    for loc in res.get("localization") or ():
        where = loc.get("location") or {}
        sites = [s for s in loc.get("sites", ()) if not _unreal(s.get("path", ""))]
        if any(s.get("verdict") in BAD for s in sites):
            continue  # the cause is reported at that site; the parameters' DTP904 name the module

        if where.get("path"):
            path, line = paths.canon(where["path"]), where["line"]
        elif sites:
            path, line = paths.canon(sites[0]["path"]), sites[0]["line"]
        else:
            continue
        inside = site_list({"sites": [dict(s, path=_rel(paths.canon(s["path"]), cwd)) for s in sites]})
        msg = loc["summary"] + (f"; DTensor entries and exits inside it: {inside}" if inside else
                                "; no DTensor entry or exit ran inside it")
        f = _finding("DTP904", path, line, msg, cwd, loc["module"] or "<root>",
                     {"verdict": "confirmed", "evidence": {"localization": loc, "harness": res.get("harness")}})
        for s in sites[:_RELATED_SITES + 1]:
            label = ", ".join(s["declared"]) if s.get("declared") else "default label"
            f.related.append(Related(_rel(paths.canon(s["path"]), cwd), s["line"],
                                     f"`{s['api']}` inside {loc['module'] or 'the root module'} ({label}): {s.get('verdict')}"))
        out.append(f)
    return out


def _not_reached(f: Finding, matcher: _Matcher, results: list[dict]) -> dict:
    """Why no site matched `f`: its file was never imported by the ranks, or it was and the line
    (for a style: no module named by the plan entry's key) never ran. Tells the user how to
    extend the harness."""
    fpath = _abs(f.path, matcher.cwd)
    known = [h for h in (r.get("harness") for r in results) if h in matcher.loaded]
    imported = None if len(known) < len(results) else any(fpath in matcher.loaded[h] for h in known)
    keys = matcher.plan_keys.get(id(f)) or []
    if imported is False:
        reason = "the ranks never imported this file: the harness builds no model from it"
    elif keys:
        reason = (f"no module whose name ends with {', '.join(f'`{k}`' for k in keys)} ran a hook of this style: "
                  "the harness never called that module (or built a model without this plan entry)")
    else:
        reason = "no harness executed this line" + ("" if imported else " (or the module this style is applied to)")
    ev = {"reason": reason, "harnesses": [r.get("harness") for r in results]}
    if imported is not None:
        ev["file_imported"] = imported
    if keys:
        ev["plan_keys"] = keys
    return ev


#: runtime sites named as `related` locations of the static finding they matched, at most
_RELATED_SITES = 3


def _relate_sites(f: Finding, sites: list[dict], paths: PathIndex, cwd: str) -> None:
    """A site matched elsewhere than the finding's own line (a torch style's hook, attributed to
    the harness line that called the module, matched to the plan entry that applied the style)
    becomes a `related` location: where the run reached it."""
    have = {(_abs(f.path, cwd), f.line)} | {(_abs(r.path, cwd), r.line) for r in f.related}
    added = 0
    for s in sites:
        if _unreal(s.get("path", "")):
            continue
        loc = (paths.canon(s["path"]), s["line"])
        if loc in have or added >= _RELATED_SITES:
            continue
        have.add(loc)
        added += 1
        where = f" in the {s['hook']} hook of `{s.get('module')}`" if s.get("hook") in ("pre", "post") else ""
        via = f" ({s['torch_frame']})" if s.get("torch_frame") else ""
        f.related.append(Related(_rel(loc[0], cwd), loc[1],
                                 f"runtime: `{s['api']}`{where} reached from here{via}: {s.get('verdict')}"))


def _param_evidence(p: dict, res: dict) -> dict:
    ev = {k: p.get(k) for k in ("name", "placements", "dtype", "mesh_dim", "group_ranks",
                                "per_rank_grad_norms", "max_rel_diff", "reference_rel_diff",
                                "matches_reference", "compute_dtype", "reference_tolerance", "tolerance_source",
                                "reference_scale") if p.get(k) is not None}
    ev["harness"] = res.get("harness")
    ev["torch_version"] = res.get("torch")
    return ev


def _finding(code: str, path: str, line: int, msg: str, cwd: str, symbol: str, runtime: dict) -> Finding:
    apath = _abs(path, cwd)
    text = _source_lines(apath, line, 1)
    col = len(text) - len(text.lstrip()) + 1 if text else 1
    return Finding(code=code, slug=RUNTIME_RULES[code], path=_rel(apath, cwd), line=line, column=col,
                   end_line=line, end_column=max(len(text) + 1, col), message=msg, confidence=Confidence.HIGH,
                   symbol=symbol, related=[], fix=None, runtime=runtime)


def exit_code(report: Report) -> int:
    if report.errors:
        return 2
    for f in report.findings:
        if (f.runtime or {}).get("verdict") != "refuted":
            return 1
    return 0


def verify_targets(results: list[dict], report: Report) -> tuple[dict, dict[str, list[tuple[str, int]]]]:
    """What --verify-fix injects: {harness: {site_id: kinds}} and untracked slice lines.

    Confirmed exits get Partial on the flagged mesh dim; double-counts get Replicate; a confirmed
    slice is fixed at the local tensor it derives from (root), or — for a slice of a tensor that
    never was a DTensor — by summing its gradient over the replicas (what redistribute would do).
    """
    force: dict[str, dict[str, list]] = {}
    slices: dict[str, list[tuple[str, int]]] = {}
    by_id = {(r.get("harness"), s["id"]): s for r in results for s in r.get("sites", [])}
    for res in results:
        h = res.get("harness")
        for s in res.get("sites", []):
            if s["verdict"] not in BAD:
                continue
            dim = s["evidence"].get("mesh_dim_index")
            kind = "R" if s["verdict"] == "double-count" else "P"
            if s["api"] == "from_local":
                continue
            target = s
            if s["api"] == "slice":
                if not s.get("root"):
                    slices.setdefault(h, []).append((s["path"], s["line"]))
                    continue
                target = by_id.get((h, s["root"]), s)
                kind = "P"
            ndim = len(target["evidence"].get("forward_placements") or []) or (dim + 1 if dim is not None else 1)
            kinds: list = [None] * ndim
            if dim is not None and dim < ndim:
                kinds[dim] = kind
            force.setdefault(h, {})[target["id"]] = kinds
    return force, slices


def runtime_summary(report: Report, results: list[dict]) -> dict[str, int]:
    """What the runtime check saw, for the one-line summary (text) and `runtime_summary` (json):
    an empty report means little when the monitor saw nothing."""
    static = [f for f in report.findings if f.code not in RUNTIME_RULES]
    missed = [(f.runtime or {}).get("evidence") or {} for f in static
              if (f.runtime or {}).get("verdict", "not-reached") == "not-reached"]
    never_imported = sorted({f.path for f in static if ((f.runtime or {}).get("evidence") or {}).get("file_imported") is False
                             and f.runtime.get("verdict") == "not-reached"})
    return {
        "not_imported_files": never_imported,
        "plan_entries_not_run": sorted({k for ev in missed if ev.get("file_imported") is not False
                                        for k in ev.get("plan_keys", ())}),
        "harnesses": len(results),
        "sites_reached": sum(len(r.get("sites") or ()) for r in results),
        "parameters_checked": sum(len(r.get("params") or ()) for r in results),
        "static_findings": len(static),
        "static_findings_reached": sum(1 for f in static if (f.runtime or {}).get("verdict", "not-reached") != "not-reached"),
        "runtime_findings": len(report.findings) - len(static),
    }
