"""Configuration: `[tool.placement-lint]` in pyproject.toml (or a `placement-lint.toml`), plus
command-line overrides.  Every user mistake becomes a `ConfigError` naming the file and the key."""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

from placement_lint.errors import ConfigError
from placement_lint.findings import Confidence

# Like ruff's defaults, reduced to the obvious VCS, virtualenv, cache and build directories.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".bzr",
    ".direnv",
    ".eggs",
    ".git",
    ".hg",
    ".mypy_cache",
    ".nox",
    ".placement_lint_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".svn",
    ".tox",
    ".venv",
    "__pycache__",
    "__pypackages__",
    "_build",
    "buck-out",
    "build",
    "dist",
    "node_modules",
    "venv",
)

# Config files looked for in each directory, in order of precedence (as ruff: dedicated files
# win over pyproject.toml). The dedicated files hold the keys at top level.
CONFIG_FILENAMES = (".placement-lint.toml", "placement-lint.toml", "pyproject.toml")

# TOML key -> Config attribute
_KEYS = {
    "select": "select",
    "extend-select": "extend_select",
    "ignore": "ignore",
    "exclude": "exclude",
    "extend-exclude": "extend_exclude",
    "min-confidence": "min_confidence",
    "per-file-ignores": "per_file_ignores",
    "respect-gitignore": "respect_gitignore",
    "max-file-size": "max_file_size",
    "file-timeout": "file_timeout",
}
_ATTR_TO_KEY = {attr: key for key, attr in _KEYS.items()}
# Changing any of these invalidates the resolved selector cache.
_SELECTOR_FIELDS = frozenset({"select", "extend_select", "ignore", "per_file_ignores"})


@dataclasses.dataclass
class Config:
    select: list[str] | None = None  # None: every rule
    ignore: list[str] = dataclasses.field(default_factory=list)
    exclude: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    extend_exclude: list[str] = dataclasses.field(default_factory=list)
    min_confidence: Confidence = Confidence.MEDIUM
    per_file_ignores: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    respect_gitignore: bool = True
    max_file_size: int | None = None  # bytes; None: PLACEMENT_LINT_MAX_FILE_SIZE or 64 MiB
    file_timeout: float | None = None  # seconds a file's analysis may take; 0: no limit
    root: Path = dataclasses.field(default_factory=Path.cwd)  # directory of the config file used
    source: Path | None = None  # the config file used, if any
    extend_select: list[str] = dataclasses.field(default_factory=list)

    def __setattr__(self, name: str, value: Any) -> None:
        # Rule selection is resolved once and cached; assigning a selector field resets it
        # (changing one of the lists in place does not).
        object.__setattr__(self, name, value)
        if name in _SELECTOR_FIELDS:
            self.__dict__.pop("_resolved_cache", None)

    # Rule selection ----------------------------------------------------------------------
    def enabled_codes(self) -> frozenset[str]:
        """Codes selected and not ignored (per-file ignores aside)."""
        return self._resolved()[0]

    def rule_enabled(self, code: str, path: str | Path) -> bool:
        """Whether rule `code` runs on `path` (relative to the working directory, or absolute)."""
        enabled, per_file = self._resolved()
        if code not in enabled:
            return False
        if per_file:
            rel = self._relative(path)
            for patterns, codes in per_file:
                if code in codes and patterns.matches_path_or_parent(rel):
                    return False
        return True

    def _relative(self, path: str | Path) -> str:
        """`path` relative to `root` when under it, `/`-separated, for per-file-ignores."""
        text = os.fspath(path)
        absolute = os.path.abspath(text)
        root = os.path.abspath(self.root)
        if absolute.startswith(root.rstrip(os.sep) + os.sep):
            text = absolute[len(root.rstrip(os.sep)) + 1 :]
        return text.replace(os.sep, "/")

    def _resolved(self) -> tuple[frozenset[str], list[tuple[Any, frozenset[str]]]]:
        cached = self.__dict__.get("_resolved_cache")
        if cached is None:
            cached = _resolve(self)
            self.__dict__["_resolved_cache"] = cached
        return cached


def _specificity(selector: str) -> int:
    """How specific a selector is: ALL < a prefix (longer is more specific) < a code or slug."""
    from placement_lint.rule import lookup

    s = selector.strip()
    if s.upper() == "ALL":
        return 0
    if lookup(s) is not None:
        return 1000
    return len(s)


def _resolve(cfg: Config) -> tuple[frozenset[str], list[tuple[Any, frozenset[str]]]]:
    """(enabled codes, [(PatternSet, codes)]) for a config.

    As in ruff, when both select and ignore name a rule, the more specific selector wins
    (`select = ["DTP101"]` with `ignore = ["DTP1"]` keeps DTP101); on a tie, ignore wins.
    """
    from placement_lint.discovery import PatternSet

    best: dict[str, list[int]] = {}  # code -> [best select specificity, best ignore specificity]
    selects = list(cfg.select) if cfg.select is not None else ["ALL"]
    for key, sels, slot in (("select", selects, 0), ("extend-select", cfg.extend_select, 0), ("ignore", cfg.ignore, 1)):
        for sel in sels:
            spec = _specificity(sel)
            for code in _codes(sel, key):
                entry = best.setdefault(code, [-1, -1])
                entry[slot] = max(entry[slot], spec)
    enabled = frozenset(code for code, (sel, ign) in best.items() if sel > ign)
    per_file = []
    for pattern, sels in cfg.per_file_ignores.items():
        codes: set[str] = set()
        for sel in sels:
            codes |= _codes(sel, f"per-file-ignores.{pattern!r}")
        per_file.append((PatternSet([pattern]), frozenset(codes)))
    return enabled, per_file


def _codes(selector: str, where: str) -> set[str]:
    from placement_lint.rule import all_rules, resolve_selectors

    try:
        return resolve_selectors([selector])
    except ValueError:
        names = [r.CODE for r in all_rules()] + [r.SLUG for r in all_rules()] + ["ALL"]
        close = difflib.get_close_matches(selector.strip(), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else " (see `placement-lint rules`)"
        raise ConfigError(f"{where}: unknown rule selector {selector!r}{hint}") from None


# Loading ---------------------------------------------------------------------------------
def _read_toml(path: Path, shown: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:  # the message carries "(at line N, column M)"
        raise ConfigError(f"{shown}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{shown}: invalid TOML: not UTF-8 ({e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read: {e.strerror or e}") from None


def _label(path: Path, shown: str) -> str:
    """How messages name the table: the file, plus the table for a pyproject.toml."""
    return f"{shown}: [tool.placement-lint]" if path.name == "pyproject.toml" else shown


def _table(path: Path, shown: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The placement-lint table of a parsed config file (None if a pyproject.toml has none)."""
    if path.name != "pyproject.toml":
        return data  # the dedicated files hold the keys at top level
    tool = data.get("tool", {})
    table = tool.get("placement-lint") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{_label(path, shown)} must be a table")
    return table


def find_config_file(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest config file from `start` upward, with its placement-lint table.

    A pyproject.toml without `[tool.placement-lint]` does not count and the search goes on.
    """
    for directory in (start, *start.parents):
        for name in CONFIG_FILENAMES:
            path = directory / name
            if not path.is_file():
                continue
            shown = _shown(path, start)
            if name == "pyproject.toml":
                try:  # most pyproject files never mention us: skip the TOML parse for them
                    if b"placement-lint" not in path.read_bytes():
                        continue
                except OSError:
                    continue
            table = _table(path, shown, _read_toml(path, shown))
            if table is not None:
                return path, table
    return None


def _shown(path: Path, cwd: Path) -> str:
    """A config path as printed in messages: relative to the working directory when under it."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        # A bare string is almost always `select = "DTP101"`: say so rather than splitting it.
        raise ConfigError(f"{where}: expected a list of strings, got the string {value!r} (write [{value!r}])")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {_type_name(value)}")
    return list(value)


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        bad = next((v for v in value if not isinstance(v, str)), None)
        return f"a list containing {_type_name(bad)} {bad!r}"
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def _convert(attr: str, value: Any, where: str) -> Any:
    """A raw value for `attr` checked and converted; `where` names it in error messages."""
    if attr in ("select", "extend_select", "ignore"):
        sels = _str_list(value, where)
        for sel in sels:
            _codes(sel, where)
        return sels
    if attr in ("exclude", "extend_exclude"):
        return _str_list(value, where)
    if attr == "min_confidence":
        if isinstance(value, Confidence):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected one of 'high', 'medium', 'low', got {_type_name(value)}")
        try:
            return Confidence.parse(value)
        except ValueError:
            raise ConfigError(f"{where}: unknown confidence {value!r}: expected one of 'high', 'medium', 'low'") from None
    if attr == "respect_gitignore":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_type_name(value)}")
        return value
    if attr == "max_file_size":
        from placement_lint.source_text import parse_size

        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected a positive size in bytes, got {_type_name(value)}")
        size = (value if value > 0 else None) if isinstance(value, int) else parse_size(value)
        if size is None:
            raise ConfigError(f"{where}: expected a positive size in bytes (67108864, or a string like \"64M\"), got {value!r}")
        return size
    if attr == "file_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number of seconds (0: no limit), got {_type_name(value)}")
        if not value >= 0:  # (a NaN too)
            raise ConfigError(f"{where}: expected a number of seconds (0: no limit), got {value!r}")
        return float(value)
    if attr == "per_file_ignores":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of glob pattern = [rule selectors], got {_type_name(value)}")
        out = {}
        for pattern, sels in value.items():
            item = f"{where}.{pattern!r}"
            out[pattern] = _str_list(sels, item)
            for sel in out[pattern]:
                _codes(sel, item)
        return out
    raise AssertionError(attr)  # pragma: no cover - callers pass known attributes only


def _from_table(table: dict[str, Any], label: str) -> dict[str, Any]:
    values = {}
    for key, value in table.items():
        attr = _KEYS.get(key)
        if attr is None:
            close = difflib.get_close_matches(key, list(_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(_KEYS)})"
            raise ConfigError(f"{label}: unknown key {key!r}{hint}")
        values[attr] = _convert(attr, value, f"{label} {key}")
    return values


def load_config(cwd: Path, config_path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The configuration in effect for a run started in `cwd`.

    `config_path` names the file to use (a pyproject.toml, or a placement-lint.toml /
    .placement-lint.toml with the keys at top level); otherwise the nearest one upward from
    `cwd` is used.  `overrides` (from command-line flags; attribute or kebab-case names, None
    meaning "not given") replace the file's values, except `extend_select` and `extend_exclude`,
    which add to them.
    """
    cwd = Path(os.path.abspath(cwd))
    source: Path | None = None
    values: dict[str, Any] = {}
    if config_path is not None:
        path = Path(config_path)
        source = path if path.is_absolute() else cwd / path
        if not source.is_file():
            raise ConfigError(f"{config_path}: config file not found")
        shown = _shown(source, cwd)
        table = _table(source, shown, _read_toml(source, shown))
        values = _from_table(table or {}, _label(source, shown))
    else:
        found = find_config_file(cwd)
        if found is not None:
            source, table = found
            values = _from_table(table, _label(source, _shown(source, cwd)))

    for name, value in (overrides or {}).items():
        if value is None:
            continue
        attr = _KEYS.get(name, name)
        if attr not in _ATTR_TO_KEY:
            raise ConfigError(f"unknown override {name!r}")
        value = _convert(attr, value, f"--{_ATTR_TO_KEY[attr]}")
        if attr in ("extend_select", "extend_exclude"):
            value = values.get(attr, []) + value
        values[attr] = value

    root = source.parent if source is not None else cwd
    return Config(**values, root=root, source=source)
