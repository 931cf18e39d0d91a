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
