"""Finding identities (SARIF partialFingerprints, baseline keys) survive edits elsewhere in the
file and change when the flagged code changes; --write-baseline / --baseline accept legacy
findings, report stale entries, and refuse a bad file with one line."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from placement_lint.cli import cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUG = "tp_expert_matmul.py"


@pytest.fixture
def proj(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(FIXTURES / BUG, root / BUG)
    monkeypatch.chdir(root)
    return root


def run(*args):
    return CliRunner().invoke(cli, ["check", "--no-cache", *args])


def sarif_fingerprints():
    res = run("--format", "sarif", ".")
    return [r["partialFingerprints"]["placementLint/v2"] for r in json.loads(res.stdout)["runs"][0]["results"]]


def test_fingerprint_survives_lines_above_and_follows_the_flagged_code(proj):
    before = sarif_fingerprints()
    assert len(before) == 1
    text = (proj / BUG).read_text()
    (proj / BUG).write_text("# one\n# two\n\n" + text)  # every line number (and the message's) moves
    assert sarif_fingerprints() == before
    (proj / BUG).write_text(text.replace("h = x.to_local()", "h = x.to_local()  # same code, a comment"))
    assert sarif_fingerprints() != before  # the flagged line's text is part of the identity


def test_identical_findings_in_one_function_stay_distinct(proj):
    from placement_lint.findings import Confidence, Finding
    from placement_lint.fingerprint import fingerprints

    (proj / "m.py").write_text("def f(x):\n    a = x.to_local()\n    a = x.to_local()\n")
    two = [Finding("DTP101", "s", "m.py", line, 9, line, 21, "m", Confidence.LOW, symbol="f") for line in (2, 3)]
    fps = fingerprints(two)
    assert len(set(fps)) == 2
    assert fingerprints(list(reversed(two))) == list(reversed(fps))  # by position, not list order


def test_baseline_round_trip_stale_entries_and_errors(proj):
    res = run(".", "--write-baseline", "base.json")
    assert res.exit_code == 0 and "wrote 1 finding(s)" in res.output
    entries = json.loads((proj / "base.json").read_text())["entries"]
    assert [(e["code"], e["path"]) for e in entries] == [("DTP101", BUG)]
    assert run(".", "--baseline", "base.json").exit_code == 0
    text = (proj / BUG).read_text()
    (proj / BUG).write_text("import os\n\n" + text)  # unrelated edit above
    assert run(".", "--baseline", "base.json").exit_code == 0
    # the flagged code changes: a new finding, and the old entry is stale
    (proj / BUG).write_text(text.replace("h = x.to_local()", "h = (x * 1).to_local()"))
    res = run(".", "--baseline", "base.json")
    assert res.exit_code == 1 and "DTP101" in res.stdout
    assert "1 baseline entry matched no finding" in res.stderr
    (proj / "bad.json").write_text("[1, 2]")
    for args, msg in ((["--baseline", "bad.json"], "not a placement-lint baseline"),
                      (["--baseline", "missing.json"], "cannot read the baseline"),
                      (["--baseline", "base.json", "--write-baseline", "x.json"], "cannot be combined")):
        res = run(".", *args)
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("comment, kept", [
    ("# placement-lint: ignore-file[DTP101]", False),
    ("# placement-lint: ignore-file", False),
    ("# placement-lint: ignore-file[to-local-without-grad-placements]", False),
    ("# placement-lint: ignore-file[DTP201]", True),
])
def test_file_level_suppression(proj, comment, kept):
    text = (proj / BUG).read_text()
    (proj / BUG).write_text(text + f"\n{comment}\n")
    res = run(".", "--format", "concise")
    assert ("DTP101" in res.stdout) == kept, res.stdout


def test_misspelt_suppressions_are_reported_where_they_are(proj):
    text = (proj / BUG).read_text()
    (proj / BUG).write_text(text.replace("h = x.to_local()  # expect: DTP101",
                                         "h = x.to_local()  # placement-lint: ignore[DTP1O1]  # noqa: E501, DTP999"))
    res = run(".", "--format", "concise")
    lines = [ln for ln in res.stdout.splitlines() if "DTP001" in ln]
    assert len(lines) == 2 and "`DTP1O1`" in lines[0] and "`DTP999`" in lines[1]
    assert "DTP101" in res.stdout  # the misspelt comment silenced nothing
    col = text.splitlines()[32].index("# expect") + len("# placement-lint: ignore[") + 1
    assert lines[0].startswith(f"{BUG}:33:{col}:")
