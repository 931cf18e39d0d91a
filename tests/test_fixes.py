"""--fix / --unsafe-fixes / --diff / --add-noqa: fixes round-tripped on every fixture (each file
still parses, a second run changes nothing), the missing import added (in the suggestions too),
file modes kept, nothing written by --diff."""
import ast
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from placement_lint.cli import cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    dest = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, dest, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    return dest


def run(*args):
    return CliRunner().invoke(cli, ["check", "--no-cache", *args])


def snapshot(root: Path) -> dict[str, str]:
    return {str(p): p.read_text() for p in sorted(root.rglob("*.py"))}


def test_fixes_round_trip_on_every_fixture(tree):
    before = snapshot(tree)
    fixable = [f for f in json.loads(run("fixtures", "--format", "json").stdout)["findings"] if f["fix"]]
    assert fixable
    res = run("fixtures", "--fix")  # safe fixes only: DTP101's are all unsafe
    assert snapshot(tree) == before and "the fixes available are unsafe" not in res.output
    res = run("fixtures", "--diff", "--unsafe-fixes")
    assert res.exit_code == 1 and res.stdout.startswith("--- a/fixtures/") and snapshot(tree) == before
    res = run("fixtures", "--fix", "--unsafe-fixes", "--format", "json")
    after = snapshot(tree)
    changed = [p for p in after if after[p] != before[p]]
    assert len(changed) == len({f["path"] for f in fixable})
    for p in changed:
        ast.parse(after[p], filename=p)  # every fixed file still parses
    left = {(f["code"], f["path"], f["line"]) for f in json.loads(res.stdout)["findings"]}
    assert not {(f["code"], f["path"], f["line"]) for f in fixable} & left  # fixed findings are gone
    again = run("fixtures", "--diff", "--unsafe-fixes")
    assert again.exit_code in (0, 1) and again.stdout == ""  # nothing left to change
    assert snapshot(tree) == after


def test_missing_import_is_added_kept_in_suggestions_and_mode_preserved(tree):
    path = tree / "tp_expert_matmul.py"
    text = path.read_text().replace("DTensor, Partial, Replicate", "DTensor, Replicate").replace(
        "[Partial()]", "[Replicate()]")
    path.write_text(text)
    os.chmod(path, 0o640)
    sarif = json.loads(run("fixtures/tp_expert_matmul.py", "--format", "sarif").stdout)
    repl = sarif["runs"][0]["results"][0]["fixes"][0]["artifactChanges"][0]["replacements"]
    assert any(r["insertedContent"]["text"] == ", Partial" for r in repl)
    rd = json.loads(run("fixtures/tp_expert_matmul.py", "--format", "rdjson").stdout)
    assert any(s["text"] == ", Partial" for s in rd["diagnostics"][0]["suggestions"])
    res = run("fixtures/tp_expert_matmul.py", "--fix", "--unsafe-fixes")
    assert res.exit_code == 0, res.output
    new = path.read_text()
    # the existing `from torch.distributed.tensor import ...` is extended
    assert "from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor, Partial\n" in new
    assert new.count("import Partial") == 0 and new.count(", Partial\n") == 1
    assert "h = x.to_local(grad_placements=(Partial(),))" in new
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    ast.parse(new)


def test_add_noqa_accepts_what_is_reported_once(tree):
    res = run("fixtures", "--add-noqa")
    assert res.exit_code == 0, res.output
    assert run("fixtures").exit_code == 0  # everything reported is now suppressed
    once = snapshot(tree)
    run("fixtures", "--add-noqa")
    assert snapshot(tree) == once
    assert "h = x.to_local()  # expect: DTP101  # placement-lint: ignore[DTP101]" in (tree / "tp_expert_matmul.py").read_text()


@pytest.mark.parametrize("args, message", [
    (["--fix", "--diff"], "cannot be combined"),
    (["--unsafe-fixes"], "--unsafe-fixes needs --fix or --diff"),
])
def test_fix_flag_misuse(tree, args, message):
    res = run("fixtures", *args)
    assert res.exit_code == 2 and message in res.output


STYLE = '''\
from torch.distributed.tensor.parallel import ParallelStyle, parallelize_module


class KeepLocal(ParallelStyle):
    def __init__(self{params}):
        self.opts = {opts}

    def _apply(self, module, mesh):
        return module

    def _prepare_output_fn(self, outputs):
        return outputs.to_local()


def plan(model, mesh):
    parallelize_module(model, mesh, {{"router.gate": KeepLocal({args})}})
'''


@pytest.mark.parametrize("params, args, expected", [
    (", *, output_grad_placements=None", "", "KeepLocal(output_grad_placements=(Partial(),))"),
    (", scale=1, use_local_output=True", "2", "KeepLocal(2, use_local_output=False)"),
    (", scale=1, use_local_output=True", "2,", "KeepLocal(2, use_local_output=False)"),
    (", scale=1", "2", None),  # no option: the change belongs in the hook
])
def test_dtp102_fix_passes_the_styles_own_option(tmp_path, monkeypatch, params, args, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(STYLE.format(params=params, opts="None", args=args))
    (f,) = [f for f in json.loads(run("m.py", "--format", "json", "--min-confidence", "low").stdout)["findings"]
            if f["code"] == "DTP102"]
    if expected is None:
        assert f["fix"] is None
        return
    assert f["fix"]["applicability"] == "unsafe"
    res = run("m.py", "--fix", "--unsafe-fixes", "--min-confidence", "low")
    text = (tmp_path / "m.py").read_text()
    assert expected in text, text
    ast.parse(text)
    assert ("from torch.distributed.tensor import Partial" in text) == ("Partial" in expected)
    assert "DTP102" not in res.stdout or "Partial" in expected  # use_local_output=False: the style no longer leaks
