from __future__ import annotations

import json
from pathlib import Path

import pytest

import placement_lint.rule as rule_mod
from placement_lint import __version__
from placement_lint.findings import Confidence, Finding, Related, Report
from placement_lint.reporters import (
    FORMATS,
    fix_edits,
    render,
    render_errors,
    render_statistics,
    short_evidence,
)
from placement_lint.rule import Rule

SCHEMA = json.loads((Path(__file__).parent / "json_output_schema.json").read_text())


class FakeRule(Rule):
    """What it does: a stand-in.

    Why it breaks the gradient: it does not.
    """

    CODE = "DTP101"
    SLUG = "to-local-without-grad-placements"
    SUMMARY = "to_local() without grad_placements"
    FIX = "unsafe"


class FakeSlice(Rule):
    """Manual rank slice."""

    CODE = "DTP201"
    SLUG = "manual-rank-slice"
    SUMMARY = "rank-indexed slice"


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch):
    monkeypatch.setattr(rule_mod, "_REGISTRY", {"DTP101": FakeRule, "DTP201": FakeSlice})


def finding(**kw) -> Finding:
    base = dict(
        code="DTP101",
        slug="to-local-without-grad-placements",
        path="src/model.py",
        line=12,
        column=9,
        end_line=12,
        end_column=27,
        message="`.to_local()` without grad_placements",
        confidence=Confidence.HIGH,
        symbol="Block.forward",
    )
    base.update(kw)
    return Finding(**base)


@pytest.fixture
def report() -> Report:
    return Report(
        findings=[
            finding(
                related=[Related("src/model.py", 13, "meets the local shard of a Shard DTensor")],
                runtime={
                    "verdict": "confirmed",
                    "evidence": {"max_rel_diff": 0.41234, "mesh_dim": "tp", "call_count": 2, "per_rank_grad_norms": {"0": 1.0, "1": 2.0}},
                },
                fix={
                    "applicability": "unsafe",
                    "message": "pass grad_placements=(Partial(),)",
                    "edits": [
                        {"line": 12, "column": 9, "end_line": 12, "end_column": 27, "content": "x.to_local(grad_placements=(Partial(),))"}
                    ],
                },
            ),
            finding(
                code="DTP201",
                slug="manual-rank-slice",
                path="src/split.py",
                line=3,
                column=5,
                end_line=3,
                end_column=30,
                message="slice at a rank-derived position, 50% of rows: a,b",
                confidence=Confidence.MEDIUM,
                symbol="",
            ),
        ],
        errors=[],
        files_seen=4,
        files_parsed=2,
        seconds=0.123456,
    )


def empty() -> Report:
    return Report(findings=[], errors=[], files_seen=3, files_parsed=0, seconds=0.01)


# text / concise --------------------------------------------------------------------------
def test_text(report):
    out = render(report, "text")
    assert out.splitlines() == [
        "src/model.py:12:9: DTP101 [high] `.to_local()` without grad_placements",
        "    src/model.py:13: note: meets the local shard of a Shard DTensor",
        "    runtime: confirmed: mesh dim tp; grad norm per rank 1 / 2; max rel diff 0.412; calls 2",
        "src/split.py:3:5: DTP201 [medium] slice at a rank-derived position, 50% of rows: a,b",
        "Found 2 findings (1 high, 1 medium).",
    ]
    assert "\033[" not in out


def test_text_show_fixes(report):
    out = render(report, "text", show_fixes=True)
    assert "    fix (unsafe): pass grad_placements=(Partial(),)" in out.splitlines()


def test_text_summary_variants():
    assert render(empty(), "text") == "All checks passed!\n"
    one_low = Report(findings=[finding(confidence=Confidence.LOW)], errors=[])
    assert render(one_low, "text").splitlines()[-1] == "Found 1 finding (0 high, 0 medium, 1 low)."


def test_text_color(report):
    out = render(report, "text", color=True)
    assert "\033[31m[high]\033[0m" in out
    assert "\033[33m[medium]\033[0m" in out


def test_concise(report):
    assert render(report, "concise").splitlines() == [
        "src/model.py:12:9: DTP101 [high] `.to_local()` without grad_placements",
        "src/split.py:3:5: DTP201 [medium] slice at a rank-derived position, 50% of rows: a,b",
    ]
    assert render(empty(), "concise") == ""


def test_short_evidence():
    assert short_evidence("first line\nsecond") == "first line"
    assert short_evidence({"summary": "norms differ", "x": 1}) == "norms differ"
    ev = {"detail": "gradient differs across ranks", "mesh_dim": "tp", "max_rel_diff": 0.898526,
          "per_rank_grad_norms": {"0": 9.17927, "1": 6.0794}, "forward_placements": ["Replicate()"],
          "declared_grad_placements": None, "torch_version": "2.13.0", "unlisted": 1}
    assert short_evidence(ev) == (
        "gradient differs across ranks; mesh dim tp; grad norm per rank 9.18 / 6.08; max rel diff 0.899; "
        "forward (Replicate()); grad label default (the forward placement); torch 2.13.0"
    )
    assert short_evidence(None) == ""
    assert len(short_evidence("y" * 500)) == 240


def test_errors_and_statistics(report):
    errs = Report(findings=[], errors=[{"path": "a.py", "message": "cannot read file: Permission denied"}, {"message": "x"}])
    assert render_errors(errs) == "a.py: error: cannot read file: Permission denied\nerror: x\n"
    assert render_errors(errs, "github").splitlines()[0] == (
        "::error file=a.py::placement-lint: cannot read file: Permission denied"
    )
    assert render_errors(report) == ""
    report.findings.append(finding(line=40))
    assert render_statistics(report) == "2\tDTP101\tto-local-without-grad-placements\n1\tDTP201\tmanual-rank-slice\n"
    assert json.loads(render_statistics(report, "json"))[0] == {
        "code": "DTP101",
        "slug": "to-local-without-grad-placements",
        "count": 2,
    }


def test_unknown_format(report):
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        render(report, "xml")


def test_every_format_renders_an_empty_report():
    for fmt in FORMATS:
        assert isinstance(render(empty(), fmt), str)


# json ------------------------------------------------------------------------------------
def test_json_is_the_contract(report):
    out = render(report, "json")
    assert json.loads(out) == report.to_json()
    assert out == json.dumps(report.to_json(), indent=2) + "\n"


def test_json_matches_schema(report):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(render(report, "json")), SCHEMA)
    jsonschema.validate(json.loads(render(empty(), "json")), SCHEMA)
    # the schema does reject what breaks the contract
    bad = report.to_json()
    del bad["findings"][0]["symbol"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = report.to_json()
    bad["findings"][0]["confidence"] = "HIGH"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


# sarif -----------------------------------------------------------------------------------
def _region_ok(region: dict) -> None:
    for key in ("startLine", "startColumn", "endLine", "endColumn"):
        assert isinstance(region[key], int) and region[key] >= 1, key


def test_sarif_structure(report):
    sarif = json.loads(render(report, "sarif"))
    assert sarif["version"] == "2.1.0"
    assert sarif["$schema"].endswith("sarif-2.1.0.json")
    assert len(sarif["runs"]) == 1
    run = sarif["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "placement-lint"
    assert driver["version"] == __version__
    assert driver["informationUri"].startswith("https://")
    rules = driver["rules"]
    assert [r["id"] for r in rules] == ["DTP101", "DTP201"]
    r0 = rules[0]
    assert r0["name"] == "to-local-without-grad-placements"
    assert r0["shortDescription"]["text"] == "to_local() without grad_placements"
    assert r0["fullDescription"]["text"].startswith("What it does: a stand-in.")
    assert "Why it breaks the gradient" in r0["help"]["text"]
    assert r0["properties"]["fix"] == "unsafe"
    assert rules[1]["properties"]["fix"] == "none"
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"].startswith("file://")
    assert run["invocations"][0]["executionSuccessful"] is True

    res = run["results"]
    assert [r["ruleId"] for r in res] == ["DTP101", "DTP201"]
    assert [r["level"] for r in res] == ["error", "warning"]
    for r in res:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        assert isinstance(r["message"]["text"], str) and r["message"]["text"]
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        _region_ok(loc["region"])
        fp = r["partialFingerprints"]["placementLint/v2"]
        assert isinstance(fp, str) and len(fp) == 32
    first = res[0]
    assert first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/model.py"
    assert first["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 12,
        "startColumn": 9,
        "endLine": 12,
        "endColumn": 27,
    }
    assert first["locations"][0]["logicalLocations"] == [{"fullyQualifiedName": "Block.forward"}]
    assert first["properties"]["confidence"] == "high"
    assert first["properties"]["runtime"]["verdict"] == "confirmed"
    rel = first["relatedLocations"][0]
    assert rel["physicalLocation"]["artifactLocation"]["uri"] == "src/model.py"
    assert rel["physicalLocation"]["region"] == {"startLine": 13}
    assert rel["message"]["text"] == "meets the local shard of a Shard DTensor"
    repl = first["fixes"][0]["artifactChanges"][0]["replacements"][0]
    _region_ok(repl["deletedRegion"])
    assert repl["insertedContent"]["text"] == "x.to_local(grad_placements=(Partial(),))"
    assert "relatedLocations" not in res[1] and "fixes" not in res[1]
    assert res[1]["properties"] == {"confidence": "medium"}


def test_sarif_fingerprint_is_stable_across_line_moves(report):
    before = json.loads(render(report, "sarif"))["runs"][0]["results"][0]["partialFingerprints"]
    report.findings[0].line += 10
    report.findings[0].end_line += 10
    after = json.loads(render(report, "sarif"))["runs"][0]["results"][0]["partialFingerprints"]
    assert before == after
    report.findings[0].path = "src/other.py"
    moved = json.loads(render(report, "sarif"))["runs"][0]["results"][0]["partialFingerprints"]
    assert moved != before


def test_sarif_paths_uris_and_errors(tmp_path):
    rep = Report(
        findings=[
            finding(path="dir with space/m.py", confidence=Confidence.LOW),
            finding(code="DTP999", slug="unregistered", path=str(tmp_path / "abs.py")),
        ],
        errors=[{"path": "bad.py", "message": "cannot read file"}],
    )
    run = json.loads(render(rep, "sarif"))["runs"][0]
    res = run["results"]
    assert res[0]["level"] == "note"
    assert res[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "dir%20with%20space/m.py"
    absolute = res[1]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert absolute == {"uri": (tmp_path / "abs.py").as_uri()}
    # a finding whose rule is not registered still points at a rule entry
    assert run["tool"]["driver"]["rules"][res[1]["ruleIndex"]]["id"] == "DTP999"
    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is False
    assert inv["toolExecutionNotifications"][0]["message"]["text"] == "cannot read file"


# github ----------------------------------------------------------------------------------
def test_github(report):
    lines = render(report, "github").splitlines()
    assert lines == [
        "::error file=src/model.py,line=12,col=9,endLine=12,endColumn=27,"
        "title=DTP101 to-local-without-grad-placements::`.to_local()` without grad_placements",
        "::warning file=src/split.py,line=3,col=5,endLine=3,endColumn=30,"
        "title=DTP201 manual-rank-slice::slice at a rank-derived position, 50%25 of rows: a,b",
    ]


def test_github_escaping():
    rep = Report(
        findings=[
            finding(path="we,ird:dir/100%.py", message="line one\r\nline two 100%", confidence=Confidence.LOW)
        ],
        errors=[],
    )
    (line,) = render(rep, "github").splitlines()
    assert line.startswith("::notice file=we%2Cird%3Adir/100%25.py,line=12,")
    assert line.endswith("::line one%0D%0Aline two 100%25")


# rdjson ----------------------------------------------------------------------------------
def test_rdjson(report):
    rd = json.loads(render(report, "rdjson"))
    assert rd["source"]["name"] == "placement-lint"
    assert rd["severity"] in ("ERROR", "WARNING", "INFO")
    d0, d1 = rd["diagnostics"]
    assert d0["message"] == "`.to_local()` without grad_placements"
    assert d0["location"] == {
        "path": "src/model.py",
        "range": {"start": {"line": 12, "column": 9}, "end": {"line": 12, "column": 27}},
    }
    assert d0["severity"] == "ERROR"
    assert d0["code"] == {"value": "DTP101"}
    assert d0["suggestions"] == [
        {
            "range": {"start": {"line": 12, "column": 9}, "end": {"line": 12, "column": 27}},
            "text": "x.to_local(grad_placements=(Partial(),))",
        }
    ]
    assert d1["severity"] == "WARNING" and "suggestions" not in d1


def test_fix_edits_reads_the_rule_fix_shape():
    assert fix_edits(None) == []
    assert fix_edits({"applicability": "unsafe"}) == []
    fix = {"applicability": "unsafe", "edits": [{"line": 3, "column": 24, "end_line": 3, "end_column": 24, "content": "grad_placements=(Partial(),)"}]}
    assert fix_edits(fix) == [(3, 24, 3, 24, "grad_placements=(Partial(),)")]