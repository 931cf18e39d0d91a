"""The bundled fixtures: the findings must equal the `# expect:` markers exactly."""

from __future__ import annotations

from placement_lint.config import load_config
from placement_lint.engine import lint
from placement_lint.rule import expected_markers

from conftest import REPO


def markers():
    out = set()
    for path in sorted((REPO / "fixtures").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for line, code, _ in expected_markers(path.read_text()):
            out.add((rel, line, code))
    return out


def test_fixture_findings_equal_markers(monkeypatch):
    monkeypatch.chdir(REPO)
    report = lint(["fixtures"], load_config(REPO), use_cache=False, cwd=REPO)
    got = {(f.path, f.line, f.code) for f in report.findings}
    want = markers()
    assert len(want) >= 6
    assert got == want, f"missing: {sorted(want - got)}\nunexpected: {sorted(got - want)}"
    assert report.errors == []


def test_fixed_twins_and_negatives_are_silent_even_at_low_confidence_for_their_bug(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO)
    report = lint(["fixtures"], config, use_cache=False, cwd=REPO)
    for f in report.findings:
        assert "_fixed" not in f.path and "negatives" not in f.path, f
