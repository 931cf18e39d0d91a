"""The bundled fixtures: the findings must equal the `# expect:` markers exactly."""

from __future__ import annotations

import re

from placement_lint.config import load_config
from placement_lint.findings import Confidence
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


def test_marked_confidences_hold(monkeypatch):
    """A marker that names a confidence (`# expect: DTP101 high`) is met at exactly that one."""
    monkeypatch.chdir(REPO)
    report = lint(["fixtures"], load_config(REPO), use_cache=False, cwd=REPO)
    got = {(f.path, f.line, f.code): str(f.confidence) for f in report.findings}
    marked = {}
    for path in sorted((REPO / "fixtures").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for line, code, conf in expected_markers(path.read_text()):
            if conf:
                marked[(rel, line, code)] = conf
    assert len(marked) >= 5
    wrong = {k: (v, got.get(k)) for k, v in marked.items() if got.get(k) != v}
    assert wrong == {}, wrong


def test_fixed_twins_and_negatives_are_silent_even_at_low_confidence_for_their_bug(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO)
    report = lint(["fixtures"], config, use_cache=False, cwd=REPO)
    for f in report.findings:
        assert "_fixed" not in f.path and "negatives" not in f.path, f


def test_ok_markers_stay_below_the_default_threshold(monkeypatch):
    """Lines marked `# ok` (the corrected line of a fixed twin, a negative's use) carry no finding
    at the default threshold, also in a run at `low` (a low note that nothing rank-dependent was
    seen is allowed: that is what low means)."""
    monkeypatch.chdir(REPO)
    config = load_config(REPO)
    config.min_confidence = Confidence.LOW
    ok = set()
    for path in sorted((REPO / "fixtures").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for lineno, text in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"#\s*ok\b", text):
                ok.add((rel, lineno))
    assert len(ok) >= 10
    report = lint(["fixtures"], config, use_cache=False, cwd=REPO)
    flagged = sorted((f.path, f.line, f.code, str(f.confidence)) for f in report.findings
                     if (f.path, f.line) in ok and f.confidence >= Confidence.MEDIUM)
    assert flagged == []
