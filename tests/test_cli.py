from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import placement_lint.engine as engine
import placement_lint.rule as rule_mod
from placement_lint import __version__
from placement_lint.cli import cli, main
from placement_lint.findings import Confidence, Finding, Report
from placement_lint.rule import Example, Rule

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((Path(__file__).parent / "json_output_schema.json").read_text())


class FakeToLocal(Rule):
    """What it does: flags a bare to_local().

    Why it breaks the gradient: the all-reduce is skipped.
    """

    CODE = "DTP101"
    SLUG = "to-local-without-grad-placements"
    SUMMARY = "to_local() without grad_placements"
    FIX = "unsafe"
    INVALID = [Example("y = x.to_local()  # expect: DTP101\n", note="bare")]
    VALID = [Example({"a.py": "y = x.to_local(grad_placements=(Partial(),))\n"})]


class FakeSlice(Rule):
    """Manual rank slice."""

    CODE = "DTP201"
    SLUG = "manual-rank-slice"
    SUMMARY = "rank-indexed slice"


def _finding(code="DTP101", confidence=Confidence.HIGH, line=3) -> Finding:
    slug = {"DTP101": "to-local-without-grad-placements", "DTP201": "manual-rank-slice"}[code]
    return Finding(code, slug, "src/m.py", line, 5, line, 20, f"{code} message", confidence)


@pytest.fixture
def fake_registry(monkeypatch):
    monkeypatch.setattr(rule_mod, "_REGISTRY", {"DTP101": FakeToLocal, "DTP201": FakeSlice})


@pytest.fixture
def project(tmp_path, monkeypatch, fake_registry):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fake_lint(monkeypatch):
    """Replace the engine; `calls` records what the CLI passed, `result` is what it returns."""

    class Fake:
        calls: list = []
        result = Report(findings=[], errors=[], files_seen=1, files_parsed=1)

        def __call__(self, paths, config, **kw):
            self.calls.append((list(paths), config, kw))
            return self.result

    fake = Fake()
    fake.calls = []
    monkeypatch.setattr(engine, "lint", fake)
    return fake


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# top level -----------------------------------------------------------------------------
def test_version():
    res = run("--version")
    assert res.exit_code == 0
    assert res.output == f"placement-lint {__version__}\n"
    assert run("-V").output == res.output


def test_help_lists_commands_without_running_check(fake_lint):
    res = run("--help")
    assert res.exit_code == 0
    for name in ("check", "rules", "explain"):
        assert f"  {name}" in res.output
    assert fake_lint.calls == []
    assert run("-h").output == res.output


def test_check_is_the_default_command(project, fake_lint):
    assert run("src").exit_code == 0
    assert run("check", "src").exit_code == 0
    assert run().exit_code == 0  # no arguments: check the current directory
    assert run("--format", "json", "src").exit_code == 0  # an option first still means check
    assert [c[0] for c in fake_lint.calls] == [["src"], ["src"], ["."], ["src"]]


def test_check_help():
    res = run("check", "--help")
    assert res.exit_code == 0
    for opt in ("--format", "--output-file", "--select", "--ignore", "--min-confidence", "--exit-zero", "--config",
                "--no-respect-gitignore", "--exclude", "--jobs", "--no-cache", "--cache-dir", "--statistics", "--quiet"):
        assert opt in res.output


# exit codes ------------------------------------------------------------------------------
def test_exit_0_when_clean(project, fake_lint):
    res = run("src")
    assert res.exit_code == 0
    assert res.stdout == "All checks passed!\n"


def test_exit_1_with_findings_and_0_with_exit_zero(project, fake_lint):
    fake_lint.result = Report(findings=[_finding(), _finding("DTP201", Confidence.MEDIUM, 9)], errors=[], files_seen=1)
    res = run("src")
    assert res.exit_code == 1
    assert res.stdout.splitlines() == [
        "src/m.py:3:5: DTP101 [high] DTP101 message",
        "src/m.py:9:5: DTP201 [medium] DTP201 message",
        "Found 2 findings (1 high, 1 medium).",
    ]
    assert run("--exit-zero", "src").exit_code == 0


def test_report_errors_go_to_stderr_and_exit_2(project, fake_lint):
    fake_lint.result = Report(
        findings=[_finding()], errors=[{"path": "src/x.py", "message": "cannot read file: Permission denied"}], files_seen=2
    )
    res = run("--exit-zero", "src")
    assert res.exit_code == 2
    assert "src/m.py:3:5: DTP101" in res.stdout  # findings are still printed
    assert res.stderr == "src/x.py: error: cannot read file: Permission denied\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "xml", "src"], "Invalid value for '--format'"),
        (["--jobs", "-1", "src"], "Invalid value for '-j' / '--jobs'"),
        (["--min-confidence", "certain", "src"], "Invalid value for '--min-confidence'"),
        (["--bogus", "src"], "--bogus"),
        (["missing_dir"], "missing_dir: No such file or directory"),
        (["--select", "DTP9", "src"], "--select: unknown rule selector 'DTP9'"),
        (["--ignore", "manual-rank-slise", "src"], "(did you mean 'manual-rank-slice'?)"),
        (["--config", "nope.toml", "src"], "Invalid value for '--config'"),
    ],
)
def test_usage_errors_exit_2_without_traceback(project, args, message):
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("placement-lint: error: ")
    assert message in res.stderr
    assert "Traceback" not in res.output and res.stdout == ""


def test_config_error_exit_2(project):
    (project / "pyproject.toml").write_text("[tool.placement-lint]\nselct = ['DTP101']\n")
    res = run("src")
    assert res.exit_code == 2
    assert res.stderr == (
        "placement-lint: error: pyproject.toml: [tool.placement-lint]: unknown key 'selct' (did you mean 'select'?)\n"
    )


def test_internal_error_asks_for_a_bug_report(project, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(engine, "lint", boom)
    res = run("src")
    assert res.exit_code == 2
    assert "Traceback" in res.stderr and "RuntimeError: kaput" in res.stderr
    assert "internal error" in res.stderr and "report this bug" in res.stderr


def test_no_python_files_warns(project, fake_lint):
    fake_lint.result = Report(findings=[], errors=[], files_seen=0)
    res = run("src")
    assert res.exit_code == 0
    assert "no Python files found under src" in res.stderr
    assert run("-q", "src").stderr == ""


def test_main_exits_with_the_code(project, fake_lint):
    fake_lint.result = Report(findings=[_finding()], errors=[], files_seen=1)
    with pytest.raises(SystemExit) as info:
        main(["src", "-q"])
    assert info.value.code == 1


# options reach the config and the engine -------------------------------------------------
def test_flags_override_config(project, fake_lint):
    (project / "pyproject.toml").write_text(
        "[tool.placement-lint]\nselect = ['DTP2']\nmin-confidence = 'high'\nextend-exclude = ['a']\n"
    )
    res = run(
        "src", "--select", "DTP101,DTP201", "--select", "manual-rank-slice", "--ignore", "DTP201",
        "--min-confidence", "LOW", "--extend-exclude", "b", "--no-respect-gitignore",
        "--jobs", "3", "--no-cache", "--cache-dir", "cache",
    )
    assert res.exit_code == 0, res.output
    (paths, config, kw) = fake_lint.calls[-1]
    assert config.select == ["DTP101", "DTP201", "manual-rank-slice"]
    assert config.ignore == ["DTP201"]
    assert config.min_confidence is Confidence.LOW
    assert config.extend_exclude == ["a", "b"]
    assert config.respect_gitignore is False
    assert config.root == project and config.source == project / "pyproject.toml"
    assert kw == {"jobs": 3, "use_cache": False, "cache_dir": Path("cache"), "overlay": None}
    # defaults: config values stay, jobs 0 means "auto" (None)
    run("src")
    (_, config, kw) = fake_lint.calls[-1]
    assert config.select == ["DTP2"] and config.min_confidence is Confidence.HIGH
    assert config.respect_gitignore is True
    assert kw == {"jobs": None, "use_cache": True, "cache_dir": None, "overlay": None}


def test_exclude_flag_replaces(project, fake_lint):
    run("--exclude", "x,y", "src")
    assert fake_lint.calls[-1][1].exclude == ["x", "y"]


def test_explicit_config_file(project, fake_lint):
    conf = project / "conf" / "placement-lint.toml"
    conf.parent.mkdir()
    conf.write_text("ignore = ['DTP101']\n")
    assert run("--config", str(conf), "src").exit_code == 0
    assert fake_lint.calls[-1][1].ignore == ["DTP101"]


# output ----------------------------------------------------------------------------------
def test_formats_and_output_file(project, fake_lint):
    fake_lint.result = Report(findings=[_finding()], errors=[], files_seen=1, files_parsed=1, seconds=0.5)
    res = run("--format", "json", "src")
    assert res.exit_code == 1
    assert json.loads(res.stdout) == fake_lint.result.to_json()
    res = run("--format", "concise", "src")
    assert res.stdout == "src/m.py:3:5: DTP101 [high] DTP101 message\n"
    res = run("--format", "github", "src")
    assert res.stdout.startswith("::error file=src/m.py,line=3,col=5,")
    res = run("--format", "sarif", "-o", "out.sarif", "src")
    assert res.exit_code == 1 and res.stdout == ""
    sarif = json.loads((project / "out.sarif").read_text())
    assert sarif["runs"][0]["results"][0]["ruleId"] == "DTP101"
    res = run("--format", "rdjson", "src")
    assert json.loads(res.stdout)["diagnostics"][0]["code"]["value"] == "DTP101"


def test_quiet_drops_summary(project, fake_lint):
    fake_lint.result = Report(findings=[_finding()], errors=[], files_seen=1)
    assert run("-q", "src").stdout == "src/m.py:3:5: DTP101 [high] DTP101 message\n"
    fake_lint.result = Report(findings=[], errors=[], files_seen=1)
    assert run("-q", "src").stdout == ""


def test_statistics(project, fake_lint):
    fake_lint.result = Report(
        findings=[_finding(), _finding(line=8), _finding("DTP201")], errors=[], files_seen=1
    )
    res = run("--statistics", "src")
    assert res.exit_code == 1
    assert res.stdout == "2\tDTP101\tto-local-without-grad-placements\n1\tDTP201\tmanual-rank-slice\n"
    res = run("--statistics", "--format", "json", "src")
    assert json.loads(res.stdout)[1] == {"code": "DTP201", "slug": "manual-rank-slice", "count": 1}


def test_color_only_when_forced_or_tty(project, fake_lint, monkeypatch):
    fake_lint.result = Report(findings=[_finding()], errors=[], files_seen=1)
    assert "\033[" not in run("src").stdout  # CliRunner's stdout is not a tty
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\033[31m" in run("src").stdout
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\033[" not in run("src").stdout


# rules / explain -------------------------------------------------------------------------
def test_rules(fake_registry):
    res = run("rules")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["CODE", "SLUG", "FIX", "SUMMARY"]
    assert lines[1].split(None, 3) == ["DTP101", "to-local-without-grad-placements", "unsafe", "to_local() without grad_placements"]
    assert lines[2].split(None, 3) == ["DTP201", "manual-rank-slice", "-", "rank-indexed slice"]
    data = json.loads(run("rules", "--format", "json").stdout)
    assert data[1] == {"code": "DTP201", "slug": "manual-rank-slice", "fix": None, "summary": "rank-indexed slice"}


def test_explain(fake_registry):
    for name in ("DTP101", "dtp101", "to-local-without-grad-placements"):
        res = run("explain", name)
        assert res.exit_code == 0
        out = res.stdout
        assert out.startswith("DTP101 (to-local-without-grad-placements)\nFix: unsafe\n\nWhat it does: flags a bare to_local().")
        assert "Why it breaks the gradient" in out
        flagged, not_flagged = out.split("Examples flagged:")[1].split("Examples not flagged:")
        assert "  bare" in flagged and "  # example.py" in flagged and "    y = x.to_local()  # expect: DTP101" in flagged
        assert "  # a.py" in not_flagged and "grad_placements=(Partial(),)" in not_flagged


def test_explain_unknown(fake_registry):
    res = run("explain", "DTP11")
    assert res.exit_code == 2
    assert res.stderr == "placement-lint: error: unknown rule 'DTP11' (did you mean 'DTP101'?)\n"
    res = run("explain", "manual-rank")
    assert "did you mean 'manual-rank-slice'?" in res.stderr


def test_real_rules_and_explain():
    res = run("rules")
    assert res.exit_code == 0
    for code in ("DTP000", "DTP101", "DTP102", "DTP103", "DTP201"):
        assert code in res.stdout
    res = run("explain", "manual-rank-slice")
    assert res.exit_code == 0 and res.stdout.startswith("DTP201 (manual-rank-slice)")
    assert "Examples flagged:" in res.stdout


# lazily loaded `confirm` -------------------------------------------------------------------
def test_unavailable_lazy_command(monkeypatch):
    import placement_lint.cli as cli_mod

    monkeypatch.setitem(cli_mod._LAZY_COMMANDS, "ghost", ("placement_lint.no_such_module", "ghost", "A ghost."))
    res = run("ghost")
    assert res.exit_code == 2
    assert res.stderr.startswith("placement-lint: error: `placement-lint ghost` is not available")
    assert "ghost" not in run("--help").stdout  # listed only when its module exists


def test_lazy_command_without_torch_says_how_to_install(tmp_path, monkeypatch):
    import placement_lint.cli as cli_mod

    (tmp_path / "needs_torch_mod.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli_mod._LAZY_COMMANDS, "ghost", ("needs_torch_mod", "confirm", "A ghost."))
    res = run("ghost")
    assert res.exit_code == 2
    assert "install it with `pip install 'placement-lint[runtime]'`" in res.stderr


def test_lazy_command_loads_on_first_use(tmp_path, monkeypatch):
    import placement_lint.cli as cli_mod

    (tmp_path / "fake_runtime_cli_mod.py").write_text(
        "import click\n"
        "@click.command()\n"
        "@click.argument('what')\n"
        "def confirm(what):\n"
        "    click.echo(f'confirming {what}')\n"
        "    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli_mod._LAZY_COMMANDS, "confirm2", ("fake_runtime_cli_mod", "confirm", "Fake."))
    monkeypatch.setattr(cli_mod.cli, "commands", dict(cli_mod.cli.commands))  # undo the caching
    res = run("confirm2", "report.json")
    assert res.exit_code == 1  # the subcommand's return value is the exit code
    assert res.stdout == "confirming report.json\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_startup_imports_stay_light():
    code = (
        "import sys\n"
        "from placement_lint.cli import cli\n"
        "try:\n"
        "    cli.main(['--help'], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = sorted(m for m in ('torch', 'libcst', 'placement_lint.engine', 'placement_lint.runtime.cli', 'json', 'hashlib') if m in sys.modules)\n"
        "    print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr
    if (REPO / "placement_lint" / "runtime" / "cli.py").is_file():
        assert "  confirm" in proc.stdout


# real engine, end to end -------------------------------------------------------------------
def test_end_to_end_json_matches_schema(tmp_path, monkeypatch):
    """A real INVALID example of DTP101, linted through the CLI, gives schema-valid JSON."""
    jsonschema = pytest.importorskip("jsonschema")
    from placement_lint.rule import rule_by_code

    example = rule_by_code("DTP101").INVALID[0]
    for name, src in example.files().items():
        (tmp_path / name).write_text(src)
    monkeypatch.chdir(tmp_path)
    res = run("--format", "json", "--no-cache", "--min-confidence", "low", ".")
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)
    jsonschema.validate(data, SCHEMA)
    assert "DTP101" in {f["code"] for f in data["findings"]}
    assert data["stats"]["files_seen"] == len(example.files())
