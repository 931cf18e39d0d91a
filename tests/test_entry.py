"""The console script's fast path (placement_lint/entry.py): it answers only where the full CLI
would print the same, and it is what a pre-commit run over token-less files takes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from placement_lint import entry

ROOT = Path(__file__).resolve().parents[1]
PLAIN = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n"
DTENSOR = "def f(x):\n    return x.to_local() * 2\n"
BROKEN = "def f(:\n"  # no trigger token: never parsed, by either path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    (tmp_path / "plain.py").write_text(PLAIN)
    (tmp_path / "stub.pyi").write_text("def g() -> int: ...\n")
    (tmp_path / "uses.py").write_text(DTENSOR)
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "notes.txt").write_text("to_local\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLACEMENT_LINT_NO_FASTPATH", raising=False)
    return tmp_path


def test_fast_path_answers_only_when_certain(tree):
    assert entry.fast_exit_code(["plain.py"]) == 0
    assert entry.fast_exit_code(["check", "plain.py", "stub.pyi", "broken.py"]) == 0
    assert entry.fast_exit_code(["--no-cache", "-j", "1", "--jobs=2", "--exit-zero", "plain.py"]) == 0
    for argv in (["uses.py"], ["plain.py", "uses.py"],          # a trigger token: analyse
                 ["plain.py", "--format", "json"], ["--select", "DTP101", "plain.py"],  # options
                 ["-j", "x", "plain.py"], ["--statistics", "plain.py"], ["-o", "out.py", "plain.py"],
                 ["."], [], ["notes.txt"], ["missing.py"],      # dirs, nothing, other files, errors
                 ["rules"], ["explain", "DTP101"]):
        assert entry.fast_exit_code(argv) is None, argv


@pytest.mark.parametrize("config", [
    (".placement-lint.toml", "select = ['DTP101']\n"),
    ("placement-lint.toml", "format = 'json'\n"),
    ("pyproject.toml", "[tool.placement-lint]\nformat = 'json'\n"),
])
def test_any_config_file_defers_to_the_full_cli(tree, config):
    name, text = config
    sub = tree / "pkg"
    sub.mkdir()
    (sub / "a.py").write_text(PLAIN)
    (tree / name).write_text(text)  # found from a subdirectory too, as config discovery does
    os.chdir(sub)
    assert entry.fast_exit_code(["a.py"]) is None


@pytest.mark.parametrize("text", ["[project]\nname = 'x'\n",
                                  "[project]\nname = 'x'\ndependencies = ['placement-lint>=0.1']\n"])
def test_pyproject_without_our_table_keeps_the_fast_path(tree, text):
    (tree / "pyproject.toml").write_text(text)
    assert entry.fast_exit_code(["plain.py"]) == 0


def test_unparsable_pyproject_naming_us_defers(tree):
    (tree / "pyproject.toml").write_text("[tool.placement-lint\nselect = [\n")
    assert entry.fast_exit_code(["plain.py"]) is None


def _run(argv, cwd, fast):
    env = {k: v for k, v in os.environ.items() if k != "PLACEMENT_LINT_NO_FASTPATH"}
    if not fast:
        env["PLACEMENT_LINT_NO_FASTPATH"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run([sys.executable, "-m", "placement_lint", *argv], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("argv", [["plain.py"], ["check", "plain.py", "stub.pyi"], ["broken.py", "plain.py"],
                                  ["--no-cache", "--jobs", "1", "plain.py"], ["-q", "plain.py"],
                                  ["--exit-zero", "--no-respect-gitignore", "check", "plain.py"],
                                  ["uses.py"], ["plain.py", "--format", "json"], ["missing.py"]])
def test_same_output_with_and_without_the_fast_path(tree, argv):
    fast, full = _run(argv, tree, True), _run(argv, tree, False)
    if argv[-1] == "--format" or "json" in argv:
        # json carries the elapsed time: compare everything else
        import json

        a, b = json.loads(fast[1]), json.loads(full[1])
        a["stats"].pop("seconds"), b["stats"].pop("seconds")
        assert (fast[0], a, fast[2]) == (full[0], b, full[2])
    else:
        assert fast == full


def test_fast_path_never_imports_click_or_libcst(tree):
    code = ("import sys; from placement_lint import entry; c = entry.fast_exit_code(['plain.py']); "
            "print(c, 'click' in sys.modules, 'libcst' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60).stdout.split()
    assert out == ["All", "checks", "passed!", "0", "False", "False"]


def test_fast_path_knows_every_config_file_name():
    """entry.py mirrors config discovery without importing it (start-up cost): same file names."""
    from placement_lint.config import CONFIG_FILENAMES

    assert (*entry._CONFIG_NAMES, "pyproject.toml") == CONFIG_FILENAMES
