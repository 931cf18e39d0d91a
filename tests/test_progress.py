"""Progress: a bar for long `check` runs only where someone watches a terminal (never in CI or a
pipe), and a heartbeat naming each rank's state during a long `confirm` launch."""
import pytest
from click.testing import CliRunner

from placement_lint import parallel, progress
from placement_lint.cli import cli


@pytest.mark.parametrize("env, shown", [({"PLACEMENT_LINT_PROGRESS": "1"}, True),
                                        ({"PLACEMENT_LINT_PROGRESS": "0"}, False),
                                        ({"CI": "true"}, False)])
def test_check_progress_bar_only_when_asked_or_on_a_terminal(monkeypatch, env, shown):
    monkeypatch.delenv("PLACEMENT_LINT_PROGRESS", raising=False)
    monkeypatch.delenv("PLACEMENT_LINT_QUIET", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(progress, "BAR_AFTER_S", 0.0)
    res = CliRunner().invoke(cli, ["check", "--no-cache", "--jobs", "2", "fixtures"])
    assert res.exit_code == 1, res.output
    assert ("analysing files [" in res.stderr) == shown
    if shown:
        assert "\r\x1b[K" in res.stderr  # cleared before the report
    assert "analysing files" not in res.stdout  # the report stays clean


def test_bar_is_off_in_a_pipe(monkeypatch):
    monkeypatch.delenv("PLACEMENT_LINT_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert progress.bar_enabled() is False


def test_confirm_heartbeat_names_each_rank_state(tmp_path):
    pytest.importorskip("torch")
    from tests.runtime.conftest import run_cli

    harness = tmp_path / "slow.py"
    harness.write_text("import time\nfrom fixtures.harnesses._common import run_fixture\nfrom fixtures import "
                       "tp_expert_matmul_fixed as fixture\n\n\ndef harness(ctx):\n    time.sleep(4)\n"
                       "    return run_fixture(ctx, fixture)\n")
    proc = run_cli(["confirm", "fixtures/tp_expert_matmul_fixed.py", "--harness", f"{harness}:harness",
                    "--nproc", "2", "--backend", "gloo"],
                   env_extra={"PLACEMENT_LINT_QUIET": "", "PLACEMENT_LINT_HEARTBEAT": "1"})
    assert proc.returncode == 0, proc.stderr
    beats = [ln for ln in proc.stderr.splitlines() if "still running" in ln]
    assert beats and "2 rank(s)" in beats[-1]
    assert any("rank0: " in b and "rank1: " in b for b in beats)
