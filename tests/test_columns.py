"""Columns per format on a line with non-ASCII text before the finding: text/JSON count
characters, SARIF UTF-16 code units (its columnKind, said explicitly), rdjson UTF-8 bytes."""
import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from placement_lint.cli import cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_columns_follow_each_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (FIXTURES / "tp_expert_matmul.py").read_text()
    before = "h = x.to_local()"
    # 'é' is 1 code point, 1 UTF-16 unit, 2 UTF-8 bytes; '𝔛' is 1 code point, 2 units, 4 bytes
    prefix = "s = 'é𝔛'; "
    (tmp_path / "m.py").write_text(text.replace(before, prefix + before))

    def render(fmt):
        res = CliRunner().invoke(cli, ["check", "--no-cache", "--format", fmt, "m.py"])
        assert res.exit_code == 1, res.output
        return json.loads(res.stdout)

    (f,) = [f for f in render("json")["findings"] if f["code"] == "DTP101"]
    line = (tmp_path / "m.py").read_text().splitlines()[f["line"] - 1]
    col = line.index(before) + len("h = ") + 1  # characters, 1-based: where `x.to_local()` starts
    assert f["column"] == col
    sarif = render("sarif")["runs"][0]
    assert sarif["columnKind"] == "utf16CodeUnits"
    region = sarif["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert region["startColumn"] == col + 1  # the astral character takes two UTF-16 units
    assert region["endColumn"] - region["startColumn"] == f["end_column"] - f["column"]
    rd = render("rdjson")["diagnostics"][0]["location"]["range"]
    assert rd["start"]["column"] == col + 1 + 3  # é: +1 byte, 𝔛: +3 bytes
    # pure ASCII lines: the three agree
    shutil.copy(FIXTURES / "tp_expert_matmul.py", tmp_path / "m.py")
    plain = render("json")["findings"][0]["column"]
    assert render("sarif")["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startColumn"] == plain
    assert render("rdjson")["diagnostics"][0]["location"]["range"]["start"]["column"] == plain
