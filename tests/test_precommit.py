"""The pre-commit hook for real: pre-commit (from the package index) installs this repository's
hook (`.pre-commit-hooks.yaml`) into its own environment and runs it on a git repository whose
style hook and use site are in different files, among more than four other files (pre-commit's
batch size). A commit that touches only the style's file must fail on the use site's finding."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import style_project

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
PRE_COMMIT = shutil.which("pre-commit", path=os.path.dirname(sys.executable)) or shutil.which("pre-commit")

pytestmark = pytest.mark.skipif(PRE_COMMIT is None or shutil.which("git") is None,
                                reason="needs pre-commit (the dev extra) and git")


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def hook_repository(dest: Path) -> Path:
    """This working tree's package as a git repository tagged v0.1.0 (what `rev:` names)."""
    dest.mkdir()
    for name in ("placement_lint", "rules"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(ROOT / name, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "hook")
    git(dest, "tag", "v0.1.0")
    return dest


def run_pre_commit(proj: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PRE_COMMIT_HOME=str(home), PRE_COMMIT_COLOR="never")
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([PRE_COMMIT, "run", *args], cwd=proj, capture_output=True, text=True, env=env, timeout=600)


def test_pre_commit_reports_the_use_site_of_a_style_changed_in_another_file(tmp_path):
    hook = hook_repository(tmp_path / "hook")
    proj = style_project(tmp_path / "proj", "moe_router_fixed", others=8)
    pkg = proj / "moe_router"
    (proj / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {hook}\n  rev: v0.1.0\n  hooks:\n  - id: placement-lint\n")
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "fixed")
    home = tmp_path / "pre-commit-home"
    clean = run_pre_commit(proj, home, "--all-files")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # the commit: only the style's hook loses its grad placements
    styles = pkg / "styles.py"
    text = styles.read_text()
    assert "to_local(grad_placements=(Partial(),))" in text
    styles.write_text(text.replace("to_local(grad_placements=(Partial(),))", "to_local()"))
    git(proj, "add", "moe_router/styles.py")
    staged = run_pre_commit(proj, home)
    assert staged.returncode == 1, staged.stdout + staged.stderr
    assert "moe_router/model.py" in staged.stdout and "DTP102" in staged.stdout
    everything = run_pre_commit(proj, home, "--all-files")
    assert everything.returncode == 1 and "DTP102" in everything.stdout
