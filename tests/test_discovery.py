from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from placement_lint.config import DEFAULT_EXCLUDE, Config
from placement_lint.discovery import PatternSet, discover, translate
from placement_lint.errors import UsageError


def make(root: Path, *files: str) -> None:
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x = 1\n")


def rel(paths: list[Path], base: Path) -> list[str]:
    return [Path(os.path.relpath(p, base)).as_posix() for p in paths]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# Pattern matching --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pattern, path, expected",
    [
        ("foo", "foo", True),
        ("foo", "a/b/foo", True),
        ("foo", "a/b/foo/", True),
        ("foo", "foobar", False),
        ("foo/", "a/foo/", True),
        ("foo/", "a/foo", False),  # dir-only pattern, regular file
        ("*.py", "a/b.py", True),
        ("*.py", "a/b.pyi", False),
        ("/foo", "foo", True),
        ("/foo", "a/foo", False),  # leading slash anchors
        ("a/b", "a/b", True),
        ("a/b", "x/a/b", False),  # a middle slash anchors too
        ("a/*.py", "a/x.py", True),
        ("a/*.py", "a/b/x.py", False),  # `*` does not cross directories
        ("**/foo", "foo", True),
        ("**/foo", "x/y/foo", True),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**", "a/x/y.py", True),
        ("a/**", "a/", False),  # `a/**` is what is inside a, not a
        ("b/*", "b/", False),  # `*` never matches an empty segment
        ("b/**/", "b/c", False),  # dir-only: files inside b are not matched (git agrees)
        ("b/**/", "b/c/", True),
        ("tests/data/**", "tests/data/x.py", True),
        ("tests/data/**", "tests/data/sub/", True),
        ("te?t.py", "test.py", True),
        ("te?t.py", "te/t.py", False),
        ("[abc].py", "b.py", True),
        ("[!abc].py", "b.py", False),
        ("[!abc].py", "d.py", True),
        ("[a-c].py", "b.py", True),
        ("\\#x.py", "#x.py", True),
        ("\\!x.py", "!x.py", True),
        ("foo\\ ", "foo ", True),
        ("foo  ", "foo", True),  # unescaped trailing spaces are dropped
        ("[unterminated", "[unterminated", True),
    ],
)
def test_pattern_semantics(pattern, path, expected):
    assert (PatternSet([pattern]).check(path) is True) is expected
    # the single-regex translation agrees with the fast path used by PatternSet
    regex, _ = translate(pattern)
    import re

    assert bool(re.match(regex, path, re.DOTALL)) is expected


def test_comments_and_blanks_are_not_patterns():
    assert translate("# comment") is None
    assert translate("   ") is None
    assert translate("/") is None
    assert not PatternSet(["# x", "", "  "])


def test_last_match_wins_and_negation():
    ps = PatternSet(["*.py", "!keep.py", "keep.py"])
    assert ps.check("keep.py") is True
    ps = PatternSet(["*.py", "!keep.py"])
    assert ps.check("keep.py") is False
    assert ps.check("other.py") is True
    assert ps.check("other.txt") is None


def test_matches_path_or_parent():
    ps = PatternSet(["tests/"])
    assert ps.matches_path_or_parent("tests/a/b.py")
    assert ps.matches_path_or_parent("src/tests/b.py")
    assert not ps.matches_path_or_parent("src/b.py")
    # a negation cannot bring back a file under an ignored directory
    assert PatternSet(["build/", "!build/keep.py"]).matches_path_or_parent("build/keep.py")


# Walking -----------------------------------------------------------------------------------
def test_expands_directories_sorted_and_deduplicated(in_tmp):
    make(in_tmp, "pkg/b.py", "pkg/a.py", "pkg/sub/c.pyi", "pkg/notes.txt", "pkg/data.json", "top.py")
    cfg = Config(root=in_tmp)
    found = discover(["pkg", "pkg/a.py", "top.py", "./pkg"], cfg)
    assert [p.as_posix() for p in found] == ["pkg/a.py", "pkg/b.py", "pkg/sub/c.pyi", "top.py"]
    assert all(isinstance(p, Path) for p in found)


def test_default_is_current_directory(in_tmp):
    make(in_tmp, "a.py")
    assert [p.as_posix() for p in discover([], Config(root=in_tmp))] == ["a.py"]


def test_sort_order_matches_path_order(in_tmp):
    make(in_tmp, "a.py", "a/b.py", "a-b.py", "A.py", "a_b/c.py")
    found = discover(["."], Config(root=in_tmp))
    assert found == sorted(found)


def test_missing_path_is_a_usage_error(in_tmp):
    with pytest.raises(UsageError, match=r"^nope\.py: No such file or directory$"):
        discover(["nope.py"], Config(root=in_tmp))


def test_default_excludes(in_tmp):
    make(
        in_tmp,
        "src/ok.py",
        ".venv/lib/site.py",
        "venv/x.py",
        ".git/hooks/h.py",
        "build/gen.py",
        "dist/d.py",
        "src/__pycache__/c.py",
        "node_modules/n.py",
        ".tox/t.py",
        ".mypy_cache/m.py",
    )
    found = discover(["."], Config(root=in_tmp, respect_gitignore=False))
    assert rel(found, in_tmp) == ["src/ok.py"]
    assert ".git" in DEFAULT_EXCLUDE and ".venv" in DEFAULT_EXCLUDE


def test_exclude_is_relative_to_root(in_tmp):
    make(in_tmp, "tests/data/bad.py", "tests/test_x.py", "src/tests/data/kept.py")
    cfg = Config(root=in_tmp, exclude=["tests/data/**"])
    assert rel(discover(["."], cfg), in_tmp) == ["src/tests/data/kept.py", "tests/test_x.py"]
    # the same when the walk starts below the root: patterns stay anchored at the root
    assert rel(discover(["tests"], cfg), in_tmp) == ["tests/test_x.py"]


def test_extend_exclude_adds_to_defaults(in_tmp):
    make(in_tmp, "a.py", "gen/g.py", ".venv/v.py")
    cfg = Config(root=in_tmp, extend_exclude=["gen"], respect_gitignore=False)
    assert rel(discover(["."], cfg), in_tmp) == ["a.py"]
    # exclude replaces the defaults (as in ruff)
    cfg = Config(root=in_tmp, exclude=["gen"], respect_gitignore=False)
    assert rel(discover(["."], cfg), in_tmp) == [".venv/v.py", "a.py"]


def test_exclude_glob_and_negation(in_tmp):
    make(in_tmp, "a_pb2.py", "b.py", "keep_pb2.py")
    cfg = Config(root=in_tmp, exclude=["*_pb2.py", "!keep_pb2.py"])
    assert rel(discover(["."], cfg), in_tmp) == ["b.py", "keep_pb2.py"]


def test_explicit_files_are_always_included(in_tmp):
    make(in_tmp, "build/gen.py", "skip/x.py", "notes.txt")
    (in_tmp / ".gitignore").write_text("skip/\n")
    cfg = Config(root=in_tmp)
    assert discover(["."], cfg) == []
    found = discover(["build/gen.py", "skip/x.py", "notes.txt"], cfg)
    assert [p.as_posix() for p in found] == ["build/gen.py", "notes.txt", "skip/x.py"]


def test_explicit_directory_is_walked_even_if_excluded(in_tmp):
    make(in_tmp, "build/gen.py", "build/__pycache__/c.py")
    found = discover(["build"], Config(root=in_tmp))
    assert [p.as_posix() for p in found] == ["build/gen.py"]


def test_gitignore_root_and_nested(in_tmp):
    (in_tmp / ".git").mkdir()
    make(
        in_tmp,
        "a.py",
        "gen_x.py",
        "secret/s.py",
        "pkg/b.py",
        "pkg/local.py",
        "pkg/gen_y.py",
        "pkg/keep_gen.py",
        "pkg/deep/local.py",
        "other/local.py",
    )
    (in_tmp / ".gitignore").write_text("gen_*.py\nsecret/\n# a comment\n")
    # nested .gitignore: applies to its directory only, and can re-include
    (in_tmp / "pkg" / ".gitignore").write_text("/local.py\n!gen_y.py\n")
    found = rel(discover(["."], Config(root=in_tmp)), in_tmp)
    assert found == ["a.py", "other/local.py", "pkg/b.py", "pkg/deep/local.py", "pkg/gen_y.py", "pkg/keep_gen.py"]
    # off: everything but the default excludes (.git)
    found = rel(discover(["."], Config(root=in_tmp, respect_gitignore=False)), in_tmp)
    assert "secret/s.py" in found and "gen_x.py" in found and "pkg/local.py" in found


def test_gitignore_above_the_walked_directory_applies(in_tmp):
    (in_tmp / ".git").mkdir()
    make(in_tmp, "src/pkg/a.py", "src/pkg/gen/g.py", "src/pkg/tmp_x.py")
    (in_tmp / ".gitignore").write_text("src/pkg/gen/\ntmp_*.py\n")
    assert rel(discover(["src/pkg"], Config(root=in_tmp)), in_tmp) == ["src/pkg/a.py"]


def test_gitignore_from_repository_root_when_config_is_deeper(in_tmp):
    # the config root is a subproject; the repository's .gitignore above it still applies
    (in_tmp / ".git").mkdir()
    (in_tmp / ".gitignore").write_text("generated/\n")
    make(in_tmp, "sub/a.py", "sub/generated/g.py")
    cfg = Config(root=in_tmp / "sub")
    assert rel(discover(["sub"], cfg), in_tmp) == ["sub/a.py"]


def test_git_info_exclude(in_tmp):
    (in_tmp / ".git" / "info").mkdir(parents=True)
    (in_tmp / ".git" / "info" / "exclude").write_text("scratch.py\n")
    make(in_tmp, "a.py", "scratch.py")
    assert rel(discover(["."], Config(root=in_tmp)), in_tmp) == ["a.py"]
    # .gitignore takes precedence over info/exclude
    (in_tmp / ".gitignore").write_text("!scratch.py\n")
    assert rel(discover(["."], Config(root=in_tmp)), in_tmp) == ["a.py", "scratch.py"]


def test_file_under_ignored_dir_is_not_reincluded(in_tmp):
    (in_tmp / ".git").mkdir()
    (in_tmp / ".gitignore").write_text("out/\n!out/keep.py\n")
    make(in_tmp, "out/keep.py", "a.py")
    assert rel(discover(["."], Config(root=in_tmp)), in_tmp) == ["a.py"]


def test_paths_outside_root(tmp_path, monkeypatch):
    proj, other = tmp_path / "proj", tmp_path / "other"
    make(other, "x.py", "build/y.py", "sub/z.py")
    proj.mkdir()
    monkeypatch.chdir(proj)
    cfg = Config(root=proj, extend_exclude=["sub"])
    found = discover([str(other)], cfg)
    assert [p.name for p in found] == ["x.py"]
    assert all(p.is_absolute() for p in found)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlinked_directories_are_not_followed(in_tmp):
    make(in_tmp, "real/a.py")
    os.symlink(in_tmp / "real", in_tmp / "link", target_is_directory=True)
    os.symlink(in_tmp / "missing.py", in_tmp / "dangling.py")
    os.symlink(in_tmp / "real" / "a.py", in_tmp / "alias.py")
    found = rel(discover(["."], Config(root=in_tmp)), in_tmp)
    assert found == ["alias.py", "real/a.py"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_agrees_with_git(tmp_path, monkeypatch):
    """Random .gitignore files: discover() keeps exactly the .py files git does not ignore."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    files = [
        "/".join(p for p in (d1, d2, f) if p)
        for d1 in ("", "a", "b", "ab")
        for d2 in (("",) if not d1 else ("", "a", "b"))
        for f in ("x.py", "a.py", "b.py")
    ]
    make(tmp_path, *files)
    monkeypatch.chdir(tmp_path)
    segments = ["a", "b", "*", "**", "?.py", "[ab]", "a*", "*.py", "x.py"]
    rng = random.Random(20240601)
    cases = [["**/", "!b/*"], ["b/**/"], ["*", "!*/", "!a.py"], ["/a/", "!a/x.py"], ["a/**/b.py", "!b/"]]
    for _ in range(60):
        lines = []
        for _ in range(rng.randint(1, 3)):
            pat = "/".join(rng.choice(segments) for _ in range(rng.randint(1, 3)))
            pat = ("/" if rng.random() < 0.3 else "") + pat + ("/" if rng.random() < 0.3 else "")
            lines.append(("!" if rng.random() < 0.25 else "") + pat)
        cases.append(lines)
    for lines in cases:
        (tmp_path / ".gitignore").write_text("\n".join(lines) + "\n")
        out = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard"], capture_output=True, text=True, check=True
        ).stdout.split()
        want = sorted(p for p in out if p.endswith(".py"))
        got = sorted(p.as_posix() for p in discover(["."], Config(root=tmp_path)))
        assert got == want, lines
