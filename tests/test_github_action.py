"""The GitHub Action's script on a temporary repository: findings the pull request caused are
annotations (exit 1), legacy findings go to the job summary, and a missing base is one line."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from placement_lint import github_action
from tests.conftest import style_project

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture
def pull_request(tmp_path, monkeypatch):
    """base: a fixed style and its use site, plus a legacy finding; head: the hook loses its
    grad placements (the only change), checked out detached as CI does."""
    repo = style_project(tmp_path / "repo", "moe_router_fixed")
    shutil.copy(FIXTURES / "tp_expert_matmul.py", repo / "legacy.py")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    styles = repo / "moe_router" / "styles.py"
    styles.write_text(styles.read_text().replace("return outputs.to_local(grad_placements=(Partial(),))",
                                                 "return outputs.to_local()"))
    git(repo, "commit", "-qam", "head")
    git(repo, "checkout", "-q", "--detach")
    monkeypatch.chdir(repo)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return repo, base, summary


def test_annotations_for_the_change_summary_for_the_rest(pull_request, capsys):
    repo, base, summary = pull_request
    rc = github_action.run(["--base", base, "--format", "sarif", "--sarif-file", "out.sarif", "."])
    out = capsys.readouterr().out
    assert rc == 1
    assert out.startswith("::warning file=moe_router/model.py,line=") and "DTP102" in out
    assert "legacy.py" not in out
    text = summary.read_text()
    assert "1 finding(s) on lines this change touched" in text and "`legacy.py:33` | DTP101" in text
    assert (repo / "out.sarif").exists() and "legacy.py" in (repo / "out.sarif").read_text()


def test_base_from_the_pull_request_and_clear_errors(pull_request, monkeypatch):
    repo, base, _ = pull_request
    git(repo, "update-ref", "refs/remotes/origin/main", base)
    monkeypatch.setenv("GITHUB_BASE_REF", "main")
    assert github_action.run(["."]) == 1
    monkeypatch.delenv("GITHUB_BASE_REF")
    proc = subprocess.run([sys.executable, "-m", "placement_lint.github_action", "."], cwd=repo,
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                               if k != "GITHUB_BASE_REF"})
    assert proc.returncode == 2 and "no base revision" in proc.stderr and "Traceback" not in proc.stderr


def test_action_metadata_runs_this_script():
    text = (ROOT / "action.yml").read_text()
    assert "using: composite" in text and "python -m placement_lint.github_action" in text
    for name in ("paths", "base", "format", "min-confidence"):
        assert f"  {name}:" in text and f"inputs.{name}" in text
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(text)
    assert data["runs"]["using"] == "composite" and set(data["inputs"]) >= {"paths", "base", "format"}
    assert all("shell" in step for step in data["runs"]["steps"] if "run" in step)
