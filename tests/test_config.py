from __future__ import annotations

from pathlib import Path

import pytest

import placement_lint.rule as rule_mod
from placement_lint.config import DEFAULT_EXCLUDE, Config, find_config_file, load_config
from placement_lint.errors import ConfigError, UsageError
from placement_lint.findings import Confidence
from placement_lint.rule import Rule


def _fake(code: str, slug: str) -> type[Rule]:
    return type(f"Fake{code}", (Rule,), {"CODE": code, "SLUG": slug, "SUMMARY": slug, "__doc__": slug})


FAKE_RULES = {
    r.CODE: r
    for r in (
        _fake("DTP000", "parse-error"),
        _fake("DTP101", "to-local-without-grad-placements"),
        _fake("DTP102", "implicit-local-conversion"),
        _fake("DTP103", "local-map-without-grad-placements"),
        _fake("DTP201", "manual-rank-slice"),
    )
}
ALL = set(FAKE_RULES)


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch):
    """A registry of stand-ins, so these tests do not depend on the real rules' modules."""
    monkeypatch.setattr(rule_mod, "_REGISTRY", dict(FAKE_RULES))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# Selection --------------------------------------------------------------------------------
def enabled(cfg: Config, path: str = "src/a.py") -> set[str]:
    return {code for code in ALL if cfg.rule_enabled(code, path)}


def test_defaults_enable_everything():
    cfg = Config()
    assert enabled(cfg) == ALL
    assert cfg.min_confidence is Confidence.MEDIUM
    assert cfg.respect_gitignore is True
    assert cfg.exclude == list(DEFAULT_EXCLUDE)
    assert cfg.source is None


@pytest.mark.parametrize(
    "select, expected",
    [
        (["DTP101"], {"DTP101"}),
        (["dtp101"], {"DTP101"}),
        (["manual-rank-slice"], {"DTP201"}),
        (["DTP1"], {"DTP101", "DTP102", "DTP103"}),
        (["DTP10", "DTP2"], {"DTP101", "DTP102", "DTP103", "DTP201"}),
        (["ALL"], ALL),
        ([], set()),
    ],
)
def test_select(select, expected):
    assert enabled(Config(select=select)) == expected


def test_ignore_and_specificity():
    assert enabled(Config(ignore=["DTP1"])) == {"DTP000", "DTP201"}
    assert enabled(Config(ignore=["implicit-local-conversion"])) == ALL - {"DTP102"}
    # the more specific selector wins, in either direction
    assert enabled(Config(select=["DTP101"], ignore=["DTP1"])) == {"DTP101"}
    assert enabled(Config(select=["DTP1"], ignore=["DTP101"])) == {"DTP102", "DTP103"}
    # a tie goes to ignore
    assert enabled(Config(select=["DTP101"], ignore=["DTP101"])) == set()


def test_extend_select_adds():
    assert enabled(Config(select=["DTP101"], extend_select=["DTP201"])) == {"DTP101", "DTP201"}


def test_enabled_codes():
    assert Config(select=["DTP1"], ignore=["DTP103"]).enabled_codes() == {"DTP101", "DTP102"}


def test_per_file_ignores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config(
        root=tmp_path,
        per_file_ignores={"tests/*": ["DTP2"], "__init__.py": ["ALL"], "legacy/": ["DTP101"]},
    )
    assert enabled(cfg, "tests/test_a.py") == ALL - {"DTP201"}
    assert enabled(cfg, "tests/sub/test_b.py") == ALL - {"DTP201"}  # via the parent directory
    assert enabled(cfg, "src/tests/x.py") == ALL  # `tests/*` is anchored at the root
    assert enabled(cfg, "pkg/__init__.py") == set()  # an unanchored name matches at any depth
    assert enabled(cfg, "legacy/old/m.py") == ALL - {"DTP101"}
    assert enabled(cfg, str(tmp_path / "tests" / "t.py")) == ALL - {"DTP201"}  # absolute paths
    assert enabled(cfg, "src/a.py") == ALL


def test_per_file_ignores_relative_to_root_not_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # findings are reported relative to cwd
    cfg = Config(root=tmp_path, per_file_ignores={"sub/gen/*": ["ALL"]})
    assert enabled(cfg, "gen/x.py") == set()
    assert enabled(cfg, "x.py") == ALL


def test_cache_is_refreshed_when_selection_changes():
    cfg = Config(select=["DTP101"])
    assert cfg.rule_enabled("DTP101", "a.py")
    cfg.ignore = ["DTP101"]
    assert not cfg.rule_enabled("DTP101", "a.py")


def test_unknown_selector_in_a_config_object_errors():
    with pytest.raises(ConfigError, match="select: unknown rule selector 'DTP9'"):
        Config(select=["DTP9"]).rule_enabled("DTP101", "a.py")


# Loading ----------------------------------------------------------------------------------
def test_no_config_file(tmp_path):
    cfg = load_config(tmp_path)
    assert cfg.source is None
    assert cfg.root == tmp_path
    assert enabled(cfg) == ALL


def test_pyproject_found_upward(tmp_path):
    pyproject = write(
        tmp_path / "pyproject.toml",
        """
[project]
name = "x"

[tool.placement-lint]
select = ["DTP1"]
ignore = ["DTP103"]
exclude = ["gen"]
extend-exclude = ["more"]
min-confidence = "high"
per-file-ignores = { "tests/*" = ["DTP101"] }
respect-gitignore = false
""",
    )
    (tmp_path / "a" / "b").mkdir(parents=True)
    cfg = load_config(tmp_path / "a" / "b")
    assert cfg.source == pyproject
    assert cfg.root == tmp_path
    assert cfg.select == ["DTP1"] and cfg.ignore == ["DTP103"]
    assert cfg.exclude == ["gen"] and cfg.extend_exclude == ["more"]
    assert cfg.min_confidence is Confidence.HIGH
    assert cfg.per_file_ignores == {"tests/*": ["DTP101"]}
    assert cfg.respect_gitignore is False
    assert enabled(cfg, str(tmp_path / "x.py")) == {"DTP101", "DTP102"}
    assert enabled(cfg, str(tmp_path / "tests" / "t.py")) == {"DTP102"}


def test_pyproject_without_our_table_is_skipped(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.placement-lint]\nselect = ['DTP2']\n")
    write(tmp_path / "sub" / "pyproject.toml", "[project]\nname = 'sub'\n")
    # mentions the tool but has no table: parsed, then skipped
    write(tmp_path / "sub" / "inner" / "pyproject.toml", "[project]\ndependencies = ['placement-lint']\n")
    cfg = load_config(tmp_path / "sub" / "inner")
    assert cfg.source == tmp_path / "pyproject.toml"
    assert cfg.select == ["DTP2"]


def test_dedicated_file_wins_over_pyproject(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.placement-lint]\nselect = ['DTP2']\n")
    write(tmp_path / "placement-lint.toml", "select = ['DTP101']\n")
    assert load_config(tmp_path).select == ["DTP101"]
    write(tmp_path / ".placement-lint.toml", "select = ['DTP102']\n")
    assert load_config(tmp_path).select == ["DTP102"]
    found = find_config_file(tmp_path)
    assert found is not None and found[0].name == ".placement-lint.toml"


def test_explicit_config_path(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.placement-lint]\nselect = ['DTP2']\n")
    other = write(tmp_path / "conf" / "placement-lint.toml", "ignore = ['DTP2']\n")
    cfg = load_config(tmp_path, Path("conf/placement-lint.toml"))
    assert cfg.source == other
    assert cfg.root == other.parent
    assert cfg.select is None and cfg.ignore == ["DTP2"]
    # an explicit pyproject.toml without the table: defaults
    bare = write(tmp_path / "bare" / "pyproject.toml", "[project]\nname = 'x'\n")
    assert load_config(tmp_path, bare).select is None


def test_explicit_config_path_missing(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: config file not found"):
        load_config(tmp_path, Path("nope.toml"))


def test_overrides_replace_and_extend(tmp_path):
    write(
        tmp_path / "pyproject.toml",
        "[tool.placement-lint]\nselect = ['DTP1']\nextend-exclude = ['a']\nextend-select = ['DTP000']\n",
    )
    cfg = load_config(
        tmp_path,
        overrides={
            "select": ["DTP201"],
            "ignore": None,  # not given on the command line: the file's value stays
            "min-confidence": "low",
            "extend_exclude": ["b"],
            "extend_select": ["DTP101"],
            "respect_gitignore": False,
        },
    )
    assert cfg.select == ["DTP201"]
    assert cfg.min_confidence is Confidence.LOW
    assert cfg.extend_exclude == ["a", "b"]
    assert cfg.extend_select == ["DTP000", "DTP101"]
    assert cfg.respect_gitignore is False
    assert enabled(cfg) == {"DTP000", "DTP101", "DTP201"}


# Errors: each names the file and the key --------------------------------------------------
def config_error(tmp_path: Path, text: str, name: str = "pyproject.toml") -> str:
    write(tmp_path / name, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    return str(info.value)


def test_unknown_key_suggests(tmp_path):
    msg = config_error(tmp_path, "[tool.placement-lint]\nselct = ['DTP101']\n")
    assert msg == "pyproject.toml: [tool.placement-lint]: unknown key 'selct' (did you mean 'select'?)"
    msg = config_error(tmp_path, "[tool.placement-lint]\nmin_confidence = 'high'\n")
    assert "unknown key 'min_confidence' (did you mean 'min-confidence'?)" in msg
    msg = config_error(tmp_path, "zzz = 1\n", name="placement-lint.toml")
    assert msg.startswith("placement-lint.toml: unknown key 'zzz' (known keys: select,")


@pytest.mark.parametrize(
    "body, expected",
    [
        ("select = 'DTP101'", "[tool.placement-lint] select: expected a list of strings, got the string 'DTP101'"),
        ("ignore = [1]", "[tool.placement-lint] ignore: expected a list of strings, got a list containing an integer 1"),
        ("exclude = {a = 1}", "[tool.placement-lint] exclude: expected a list of strings, got a table"),
        ("respect-gitignore = 'no'", "[tool.placement-lint] respect-gitignore: expected true or false, got a string"),
        ("min-confidence = 3", "[tool.placement-lint] min-confidence: expected one of 'high', 'medium', 'low', got an integer"),
        ("min-confidence = 'hgih'", "[tool.placement-lint] min-confidence: unknown confidence 'hgih'"),
        ("per-file-ignores = ['x']", "[tool.placement-lint] per-file-ignores: expected a table"),
        ("per-file-ignores = {'t/*' = 'DTP1'}", "[tool.placement-lint] per-file-ignores.'t/*': expected a list of strings"),
        ("max-file-size = 'lots'", "[tool.placement-lint] max-file-size: expected a positive size in bytes (67108864, or a string like \"64M\"), got 'lots'"),
        ("max-file-size = 0", "[tool.placement-lint] max-file-size: expected a positive size in bytes (67108864, or a string like \"64M\"), got 0"),
        ("max-file-size = true", "[tool.placement-lint] max-file-size: expected a positive size in bytes, got a boolean"),
        ("max-file-size = 1.5", "[tool.placement-lint] max-file-size: expected a positive size in bytes, got a float"),
        ("file-timeout = -1", "[tool.placement-lint] file-timeout: expected a number of seconds (0: no limit), got -1"),
        ("file-timeout = '10s'", "[tool.placement-lint] file-timeout: expected a number of seconds (0: no limit), got a string"),
    ],
)
def test_wrong_types(tmp_path, body, expected):
    msg = config_error(tmp_path, f"[tool.placement-lint]\n{body}\n")
    assert msg.startswith("pyproject.toml: ")
    assert expected in msg


def test_unknown_selectors(tmp_path):
    msg = config_error(tmp_path, "[tool.placement-lint]\nselect = ['DTP101', 'DTP1O2']\n")
    assert msg == "pyproject.toml: [tool.placement-lint] select: unknown rule selector 'DTP1O2' (did you mean 'DTP102'?)"
    msg = config_error(tmp_path, "[tool.placement-lint]\nignore = ['manual-rank-slices']\n")
    assert "ignore: unknown rule selector 'manual-rank-slices' (did you mean 'manual-rank-slice'?)" in msg
    msg = config_error(tmp_path, "[tool.placement-lint]\nper-file-ignores = {'x/*' = ['E501']}\n")
    assert "per-file-ignores.'x/*': unknown rule selector 'E501'" in msg


def test_toml_syntax_error_has_line(tmp_path):
    msg = config_error(tmp_path, "[tool.placement-lint]\nselect = [\n'DTP101'\nignore = 1\n")
    assert msg.startswith("pyproject.toml: invalid TOML: ")
    assert "line 4" in msg


def test_table_must_be_a_table(tmp_path):
    msg = config_error(tmp_path, "[tool]\nplacement-lint = 1\n")
    assert msg == "pyproject.toml: [tool.placement-lint] must be a table"


def test_override_errors_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"^--select: unknown rule selector 'DTP7'"):
        load_config(tmp_path, overrides={"select": ["DTP7"]})
    with pytest.raises(ConfigError, match=r"^--min-confidence: unknown confidence 'x'"):
        load_config(tmp_path, overrides={"min_confidence": "x"})
    with pytest.raises(ConfigError, match="unknown override 'colour'"):
        load_config(tmp_path, overrides={"colour": True})


def test_config_path_outside_cwd_is_shown_absolute(tmp_path):
    conf = write(tmp_path / "elsewhere" / "placement-lint.toml", "bogus = 1\n")
    (tmp_path / "work").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "work", conf)
    assert str(info.value).startswith(f"{conf}: unknown key 'bogus'")


def test_real_rules_resolve(monkeypatch):
    """With the real registry: the five catalogued rules, by code, slug and prefix."""
    monkeypatch.setattr(rule_mod, "_REGISTRY", None)
    codes = {r.CODE for r in rule_mod.all_rules()}
    assert {"DTP000", "DTP101", "DTP102", "DTP103", "DTP201"} <= codes
    cfg = Config(select=["to-local-without-grad-placements", "DTP2"], ignore=["parse-error"])
    assert {c for c in codes if cfg.rule_enabled(c, "a.py")} == {"DTP101", "DTP201"}


@pytest.mark.parametrize("value, size", [("1048576", 1048576), ("'64M'", 64 * 1024**2), ("'2GiB'", 2 * 1024**3), ("'8k'", 8192)])
def test_max_file_size(tmp_path, value, size):
    (tmp_path / "pyproject.toml").write_text(f"[tool.placement-lint]\nmax-file-size = {value}\n")
    assert load_config(tmp_path).max_file_size == size


def test_file_timeout(tmp_path, monkeypatch):
    from placement_lint import parallel

    (tmp_path / "pyproject.toml").write_text("[tool.placement-lint]\nfile-timeout = 30\n")
    assert load_config(tmp_path).file_timeout == 30.0
    monkeypatch.delenv(parallel.ITEM_TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(parallel, "configured_timeout", None)
    assert parallel.item_timeout() == parallel.DEFAULT_ITEM_TIMEOUT
    monkeypatch.setattr(parallel, "configured_timeout", 30.0)
    assert parallel.item_timeout() == 30.0
    monkeypatch.setattr(parallel, "configured_timeout", 0.0)
    assert parallel.item_timeout() is None  # 0: no limit
    monkeypatch.setenv(parallel.ITEM_TIMEOUT_ENV, "5")  # the variable wins over the file
    assert parallel.item_timeout() == 5.0
    monkeypatch.setenv(parallel.ITEM_TIMEOUT_ENV, "off")
    assert parallel.item_timeout() is None
    monkeypatch.setenv(parallel.ITEM_TIMEOUT_ENV, "soon")
    with pytest.raises(UsageError, match="PLACEMENT_LINT_FILE_TIMEOUT='soon': expected a number of seconds"):
        parallel.item_timeout()
