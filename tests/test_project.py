"""Explicit files (pre-commit, an editor, a review bot) are linted in their project: a finding
located in or caused by a given file is reported whichever of its files is given, and batching
the files (pre-commit splits them) cannot change the union of what is reported."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from placement_lint.cli import cli
from tests.conftest import style_project

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A project (pyproject.toml) with a style's hook in styles.py, its use in model.py, and
    eight unrelated files: more than a pre-commit batch of four."""
    root = style_project(tmp_path / "proj", others=8)
    monkeypatch.chdir(root)
    return root


def lint(*args):
    res = CliRunner().invoke(cli, ["check", "--format", "json", "--no-cache", *args])
    assert res.exit_code in (0, 1), res.output
    return {(f["code"], f["path"], f["line"]) for f in json.loads(res.stdout)["findings"]}


USE = ("DTP102", "moe_router/model.py", 63)


def test_a_hook_file_alone_reports_the_use_site_it_causes(repo):
    assert lint("moe_router/styles.py") == {USE}
    assert lint("moe_router/model.py") == {USE}
    assert lint("moe_router/other3.py") == set()
    # opted out: the hook's file alone knows no use site
    assert USE not in lint("--no-project", "moe_router/styles.py")


def test_batches_of_four_report_what_one_run_reports(repo):
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*.py"))
    whole = lint(*files)
    assert whole == lint("moe_router") == {USE}
    union = set()
    for i in range(0, len(files), 4):  # as pre-commit splits them without require_serial
        union |= lint(*files[i:i + 4])
    assert union == whole


def test_project_root_explicit_and_misuse(repo, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert lint("--project-root", str(repo), "moe_router/styles.py") == {USE}
    # a root that does not hold the use site: the hook's file alone again
    assert lint("--project-root", str(outside), "moe_router/styles.py") == set()
    res = CliRunner().invoke(cli, ["check", "--project-root", str(repo), "moe_router"])
    assert res.exit_code == 2 and "--project-root applies when PATHS are files" in res.output


def test_errors_elsewhere_in_the_project_are_not_the_given_files(repo):
    (repo / "moe_router" / "broken.py").write_text("def f(:\n    x.to_local()\n")
    res = CliRunner().invoke(cli, ["check", "--no-cache", "moe_router/styles.py"])
    assert res.exit_code == 1 and "broken.py" not in res.output
    res = CliRunner().invoke(cli, ["check", "--no-cache", "moe_router/broken.py"])
    assert "broken.py" in res.output and res.exit_code == 1  # a syntax error of a given file: DTP000


def test_files_outside_any_project_are_linted_alone(tmp_path, monkeypatch):
    lone = tmp_path / "lone"
    lone.mkdir()
    for name in ("styles.py", "model.py"):
        shutil.copy(FIXTURES / "moe_router" / name, lone / name)
    monkeypatch.chdir(lone)
    if any((Path(d) / m).exists() for d in [lone, *lone.parents] for m in ("pyproject.toml", ".git", "setup.py",
                                                                             "setup.cfg", "placement-lint.toml")):
        pytest.skip("the temp dir sits inside a project")
    assert lint("styles.py") == set()
