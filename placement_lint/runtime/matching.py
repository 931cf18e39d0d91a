"""Which runtime sites a static finding is about. No torch here.

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

File paths are compared through a PathIndex (paths.py): a site in a byte-identical copy of an
analysed file counts as a site in that file.
"""

from __future__ import annotations

import ast
import fnmatch
import re

from placement_lint.findings import Finding, Report
from placement_lint.runtime.paths import PathIndex, _abs, _source_lines

_PLAN_KEY = re.compile(r"""["']([A-Za-z0-9_.*\-]+)["']\s*:""")
_LOCAL_MAP_FN = re.compile(r"local_map\(\s*([A-Za-z_][\w.]*)\s*[,)]")


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
