"""The Python API (`placement_lint.lint_paths`, `lint_source`) and `placement-lint -` (stdin):
the same findings as the CLI, in the project of the named file, for text that is not on disk."""
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import placement_lint
from placement_lint.cli import cli
from placement_lint.errors import PlacementLintError
from tests.conftest import style_project

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def proj(tmp_path, monkeypatch):
    root = style_project(tmp_path / "proj")
    shutil.copy(FIXTURES / "tp_expert_matmul_fixed.py", root / "mlp.py")
    monkeypatch.chdir(root)
    return root


def _keys(findings):
    return [(f.code, f.path, f.line) for f in findings]


def test_lint_paths_reports_what_the_cli_reports(proj):
    assert _keys(placement_lint.lint_paths(["moe_router/styles.py"], use_cache=False)) == [
        ("DTP102", "moe_router/model.py", 63)]
    assert _keys(placement_lint.lint_paths(["."], use_cache=False)) == [("DTP102", "moe_router/model.py", 63)]
    assert placement_lint.lint_paths(["."], use_cache=False, ignore=["DTP102"]) == []
    with pytest.raises(PlacementLintError, match="No such file"):
        placement_lint.lint_paths(["missing.py"])


def test_lint_source_analyses_an_unsaved_buffer_in_its_project(proj):
    text = (proj / "mlp.py").read_text()
    assert placement_lint.lint_source(text, "mlp.py", use_cache=False) == []
    broken = text.replace("x.to_local(grad_placements=(Partial(),))", "x.to_local()")
    found = placement_lint.lint_source(broken, "mlp.py", use_cache=False)
    assert [(f.code, f.path) for f in found] == [("DTP101", "mlp.py")]
    assert (proj / "mlp.py").read_text() == text  # the disk is untouched
    # a file that does not exist yet, and the project around it (the hook in the buffer, its
    # use site on disk)
    hook = (proj / "moe_router" / "styles.py").read_text()
    assert _keys(placement_lint.lint_source(hook, "moe_router/styles.py", use_cache=False)) == [
        ("DTP102", "moe_router/model.py", 63)]
    assert _keys(placement_lint.lint_source(broken, "new/unsaved.py", use_cache=False)) == [
        ("DTP101", "new/unsaved.py", found[0].line)]


def test_stdin_with_a_filename(proj):
    broken = (proj / "mlp.py").read_text().replace("x.to_local(grad_placements=(Partial(),))", "x.to_local()")
    res = CliRunner().invoke(cli, ["check", "--no-cache", "--format", "concise", "-", "--stdin-filename", "mlp.py"],
                             input=broken)
    assert res.exit_code == 1 and res.stdout.startswith("mlp.py:") and "DTP101" in res.stdout
    res = CliRunner().invoke(cli, ["check", "--no-cache", "-"], input="x = 1\n")
    assert res.exit_code == 0
    for args, msg in ((["-", "mlp.py"], "must be the only PATH"), (["--stdin-filename", "a.py", "."], "needs PATHS `-`")):
        res = CliRunner().invoke(cli, ["check", *args], input="")
        assert res.exit_code == 2 and msg in res.output


def test_cwd_names_the_directory_paths_are_relative_to(proj, tmp_path, monkeypatch):
    """`cwd=` is where relative paths are looked for, not the process's working directory (which
    here holds other findings that must not appear)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(FIXTURES / "tp_expert_matmul.py", elsewhere / "other.py")  # a DTP101 of its own
    monkeypatch.chdir(elsewhere)
    assert _keys(placement_lint.lint_paths(["."], cwd=proj, use_cache=False)) == [("DTP102", "moe_router/model.py", 63)]
    assert _keys(placement_lint.lint_paths(["moe_router/styles.py"], cwd=proj, use_cache=False)) == [
        ("DTP102", "moe_router/model.py", 63)]
    with pytest.raises(PlacementLintError, match="No such file"):
        placement_lint.lint_paths(["other.py"], cwd=proj, use_cache=False)


def test_a_buffer_outside_any_project_is_the_only_file_analysed(tmp_path, monkeypatch):
    """With no project marker above `cwd`, the buffer is analysed alone: not the process's
    directory instead (which here holds a finding of its own)."""
    loose, busy = tmp_path / "loose", tmp_path / "busy"
    loose.mkdir()
    busy.mkdir()
    shutil.copy(FIXTURES / "tp_expert_matmul.py", busy / "other.py")
    monkeypatch.chdir(busy)
    text = (FIXTURES / "tp_expert_matmul.py").read_text()
    found = placement_lint.lint_source(text, "model.py", cwd=loose, use_cache=False)
    assert {(f.code, f.path) for f in found} == {("DTP101", "model.py")}
    monkeypatch.chdir(loose)  # the same from inside it
    assert [(f.code, f.path) for f in placement_lint.lint_source(text, "model.py", use_cache=False)] == [
        (f.code, f.path) for f in found]
