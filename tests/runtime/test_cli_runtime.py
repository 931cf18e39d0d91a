"""`placement-lint confirm` edges that need no launch."""
import pytest

from tests.runtime.conftest import run_cli


@pytest.mark.torch_free
def test_confirm_without_torch_exits_2_with_the_install_hint(tmp_path):
    # a sitecustomize that makes `import torch` fail, as on a machine without torch
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('No module named torch')\n"
        "sys.meta_path.insert(0, _Block())\n")
    import os

    proc = run_cli(["confirm", "fixtures/token_split.py", "--harness", "fixtures/harnesses/token_split.py:harness"],
                   env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 2
    assert ("placement-lint: error: the runtime checker needs torch: pip install placement-lint[runtime]"
            in proc.stderr), proc.stderr


def test_sim_refuses_code_that_asks_for_its_rank():
    proc = run_cli(["confirm", "fixtures/token_split.py", "--harness", "fixtures/harnesses/token_split.py:harness",
                    "--backend", "sim"])
    assert proc.returncode == 2
    assert "--backend sim cannot run code that asks for its rank" in proc.stderr
    assert "fixtures/token_split.py:35" in proc.stderr  # mesh.get_local_rank()


def test_warns_when_no_static_finding_matched_a_runtime_site(capsys, monkeypatch):
    """Analysing one copy of a package while the ranks import another leaves every finding
    not-reached: that must be said, not silently reported."""
    from placement_lint.findings import Confidence, Finding, Report
    from placement_lint.runtime import cli as runtime_cli

    monkeypatch.delenv("PLACEMENT_LINT_QUIET", raising=False)

    def report(verdict):
        f = Finding("DTP101", "to-local-without-grad-placements", "a.py", 3, 1, 3, 9, "m", Confidence.HIGH)
        f.runtime = {"verdict": verdict, "evidence": {}}
        return Report(findings=[f], errors=[])

    results = [{"harness": "h.py:harness", "sites": [{"id": 0}, {"id": 1}]}]
    runtime_cli._warn_if_nothing_matched(report("not-reached"), results)
    assert "none of the 1 static finding(s) matched any of the 2 site(s)" in capsys.readouterr().err
    runtime_cli._warn_if_nothing_matched(report("confirmed"), results)
    assert capsys.readouterr().err == ""


def _two_copies(tmp_path, root, installed_suffix=""):
    """The tp_expert_matmul fixture as package `tpkg` twice: analysed (checkout/src) and imported
    by the ranks (site/), the latter optionally changed; and a harness importing `tpkg`."""
    src = (root / "fixtures" / "tp_expert_matmul.py").read_text()
    for base, text in ((tmp_path / "checkout" / "src", src), (tmp_path / "site", src + installed_suffix)):
        (base / "tpkg").mkdir(parents=True)
        (base / "tpkg" / "__init__.py").write_text("")
        (base / "tpkg" / "model.py").write_text(text)
    harness = tmp_path / "harness.py"
    harness.write_text("from fixtures.harnesses._common import run_fixture\nfrom tpkg import model\n\n\n"
                       "def harness(ctx):\n    return run_fixture(ctx, model)\n")
    import os

    env = {"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PLACEMENT_LINT_QUIET": ""}
    return str(tmp_path / "checkout" / "src" / "tpkg"), f"{harness}:harness", env


def _sim_or_skip():
    from placement_lint.runtime import sim

    why = sim.unsupported_reason()
    if why:
        pytest.skip(f"local-tensor simulation unavailable: {why}")


def test_confirm_matches_findings_in_an_identical_installed_copy(tmp_path, root):
    """The ranks import `tpkg` from site/, the analysed tree is checkout/src/tpkg: same bytes, so
    DTP101 at line 33 is confirmed (it was not-reached when paths were compared as they are),
    and the json report says what the runtime check saw."""
    import json

    _sim_or_skip()
    analysed, harness, env = _two_copies(tmp_path, root)
    proc = run_cli(["confirm", analysed, "--harness", harness, "--backend", "sim", "--format", "json"],
                   env_extra=env, timeout=240)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    (f101,) = [f for f in data["findings"] if f["code"] == "DTP101"]
    assert f101["line"] == 33 and f101["runtime"]["verdict"] == "confirmed", f101
    assert f101["runtime"]["evidence"]["site"] == f"{tmp_path / 'site' / 'tpkg' / 'model.py'}:33"
    rs = data["runtime_summary"]
    assert rs["harnesses"] == 1 and rs["sites_reached"] > 0 and rs["parameters_checked"] == 3
    assert rs["static_findings_reached"] == rs["static_findings"] >= 1
    assert "warning" not in proc.stderr


def test_confirm_does_not_match_a_changed_installed_copy_and_warns(tmp_path, root):
    _sim_or_skip()
    analysed, harness, env = _two_copies(tmp_path, root, installed_suffix="# a later release\n")
    proc = run_cli(["confirm", analysed, "--harness", harness, "--backend", "sim"], env_extra=env, timeout=240)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if ":33:" in line and "DTP101" in line)
    verdict = next(line.strip() for line in lines[i + 1:] if line.startswith("    runtime: "))
    assert verdict.startswith("runtime: not-reached"), verdict
    assert lines[-2].startswith("runtime: 1 harness, ") and "0/" in lines[-2], lines[-2:]
    assert proc.stderr.count("has other contents") == 1, proc.stderr
    assert str(tmp_path / "site" / "tpkg" / "model.py") in proc.stderr


@pytest.mark.parametrize("spec, message", [
    ("fixtures/harnesses/nope.py:harness", "harness file not found"),
    ("fixtures/harnesses/tp_expert_matmul.py:nope", "defines no top-level 'nope'"),
    ("{bad}:harness", "syntax error at"),
    ("no_such_pkg_xyz.mod:harness", "cannot import harness module"),
])
def test_a_bad_harness_is_refused_before_any_rank_starts(tmp_path, monkeypatch, spec, message):
    from click.testing import CliRunner

    from placement_lint.cli import cli
    from placement_lint.runtime import launcher

    bad = tmp_path / "bad.py"
    bad.write_text("def harness(ctx:\n")
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: pytest.fail("a rank was started"))
    res = CliRunner().invoke(cli, ["confirm", "fixtures/tp_expert_matmul.py", "--harness",
                                   spec.format(bad=bad), "--nproc", "2", "--backend", "gloo"])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


@pytest.mark.multiprocess
def test_no_temporary_directory_is_left_behind(tmp_path):
    """The launch folders, the reference run's folder and torchrun's torchelastic_* folders go;
    --keep-dir keeps them where asked."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ["confirm", "fixtures/tp_expert_matmul.py", "--harness", "fixtures/harnesses/tp_expert_matmul.py:harness",
            "--nproc", "2", "--backend", "gloo"]
    proc = run_cli([*args, "--verify-fix"], env_extra={"TMPDIR": str(tmp)})
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []
    keep = tmp_path / "keep"
    proc = run_cli([*args, "--keep-dir", str(keep)], env_extra={"TMPDIR": str(tmp)})
    assert proc.returncode == 1 and (keep / "launch.log").exists()
    assert sorted(p.name for p in tmp.iterdir()) == []


@pytest.mark.multiprocess
def test_confirm_fix_applies_only_what_verify_fix_proved(tmp_path):
    import json
    import shutil

    from tests.runtime.conftest import ROOT

    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "fixtures" / "tp_expert_matmul.py"
    args = ["confirm", "fixtures/tp_expert_matmul.py", "--harness", "fixtures/harnesses/tp_expert_matmul.py:harness",
            "--nproc", "2", "--backend", "gloo"]
    proc = run_cli([*args, "--fix"], cwd=tmp_path)
    assert proc.returncode == 2 and "pass --verify-fix too" in proc.stderr
    proc = run_cli([*args, "--verify-fix", "--fix", "--format", "json"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (f101,) = [f for f in json.loads(proc.stdout)["findings"] if f["code"] == "DTP101"]
    assert f101["fix"]["applicability"] == "safe" and "proven by confirm --verify-fix" in f101["fix"]["message"]
    assert "h = x.to_local(grad_placements=(Partial(),))" in target.read_text()
