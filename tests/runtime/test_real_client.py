"""`placement-lint confirm` on a real client: torchtitan 0.3.0's DeepSeek-V3 MoE with its own TP.

Slow (about a minute on 2 cores: three launches of 2 gloo ranks that import torchtitan) and needs
torchtitan and the few pure-Python packages it imports (bench/real_client/README.md), so it runs
only when asked:

    PLACEMENT_LINT_REAL_CLIENT=1 pytest -q tests/runtime/test_real_client.py

It analyses the installed torchtitan package, so findings and runtime sites match by path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = "bench/real_client/torchtitan_moe.py:harness"
SCALED_BIAS = "bench/real_client/torchtitan_scaled_bias.py:harness"
CONFIG = "bench/real_client/placement-lint.toml"


def _register_slow_marker() -> None:
    # tests/runtime/conftest.py registers the other markers; register ours before using it so
    # pytest does not warn about an unknown mark
    cfg = getattr(pytest.mark, "_config", None)
    if cfg is not None and not any(str(m).startswith("slow") for m in cfg.getini("markers")):
        cfg.addinivalue_line("markers", "slow: minute-long runs against real clients (opt-in)")


_register_slow_marker()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.multiprocess,
    pytest.mark.skipif(os.environ.get("PLACEMENT_LINT_REAL_CLIENT") != "1",
                       reason="set PLACEMENT_LINT_REAL_CLIENT=1 to run (about a minute)"),
]


def _torchtitan_dir() -> Path:
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "bench" / "real_client"))
    try:
        from tt_torch_compat import install

        install()  # torchtitan 0.3.0 on torch 2.11: one name it imports is missing there
        import torchtitan  # noqa: F401
        import torchtitan.models.deepseek_v3  # noqa: F401  (tyro, spmd_types, triton, ...)
    except ImportError as exc:
        pytest.skip(f"torchtitan not importable: {exc}")
    from importlib.metadata import version

    if version("torchtitan") != "0.3.0":
        pytest.skip(f"written against torchtitan 0.3.0, found {version('torchtitan')}")
    import torchtitan as tt

    return Path(tt.__file__).resolve().parent


def _confirm(tmp_path: Path, harness: str, *extra: str, env: dict | None = None) -> tuple[int, dict, str]:
    out = tmp_path / f"report{len(list(tmp_path.iterdir()))}.json"
    cmd = [sys.executable, "-m", "placement_lint", "confirm", str(_torchtitan_dir()), "--config", CONFIG,
           "--harness", harness, "--nproc", "2", "--backend", "gloo", "--timeout", "300",
           "--format", "json", "-o", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, **(env or {})))
    report = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, report, proc.stderr


def _by_loc(report: dict) -> dict:
    return {(f["path"].split("torchtitan/", 1)[-1], f["line"], f["code"]): f for f in report["findings"]}


def test_moe_tp_runs_and_reaches_the_expert_sites(tmp_path):
    rc, report, err = _confirm(tmp_path, HARNESS)
    assert rc in (0, 1), err
    assert report["errors"] == []
    found = _by_loc(report)
    # the exits the MoE model executes under TP=2 (all Shard-labelled: inconclusive without
    # a reference); every other low finding lives in code this model does not run
    for loc in [("models/common/moe.py", 71, "DTP101"), ("models/common/moe.py", 73, "DTP101"),
                ("models/common/moe.py", 75, "DTP101"), ("models/common/embedding.py", 50, "DTP101"),
                ("components/loss.py", 46, "DTP101")]:
        assert loc in found, loc
        assert found[loc]["runtime"]["verdict"] == "inconclusive", found[loc]["runtime"]
    # no runtime-only finding: replicated gradients agree, no double count, no unflagged exit
    assert not [f for f in report["findings"] if f["code"] in ("DTP901", "DTP902", "DTP903")]


def test_monitor_does_not_change_numerics(tmp_path):
    sys.path.insert(0, str(ROOT))
    from placement_lint.runtime.launcher import LaunchOptions, launch

    _torchtitan_dir()
    dumps = {}
    for mode in ("plain", "check"):
        prefix = str(tmp_path / mode)
        launch({"harnesses": [HARNESS], "cwd": str(ROOT), "mode": mode},
               LaunchOptions(nproc=2, backend="gloo", timeout=300, extra_env={"TT_DUMP": prefix}))
        dumps[mode] = [json.loads(Path(f"{prefix}.rank{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        a, b = dumps["plain"][r], dumps["check"][r]
        assert a["loss"] == b["loss"]
        assert a["grad_norms"] == b["grad_norms"]  # bitwise: every parameter gradient's norm
        assert len(a["grad_norms"]) > 30


def test_scaled_bias_rowwise_linear_bias_is_caught_by_the_reference(tmp_path):
    rc, report, err = _confirm(tmp_path, SCALED_BIAS, "--reference")
    assert rc == 1, err
    found = _by_loc(report)
    bias = [f for f in report["findings"] if f["code"] == "DTP904" and f["symbol"] == "linear_fc2.bias"]
    assert bias, report["findings"]
    rel = bias[0]["runtime"]["evidence"]["reference_rel_diff"]
    assert all(abs(v - 0.5) < 1e-3 for v in rel.values()), rel  # each rank holds 1/tp of it
    # every rank holds the same (wrong) gradient, so the cross-rank check alone cannot see it;
    # the reference ties the bias's bare to_local() to the 1/tp gradient (docs/runtime.md issue 4)
    site = found[("models/common/linear.py", 69, "DTP101")]["runtime"]
    assert site["verdict"] == "confirmed", site
    assert site["evidence"]["parameter"] == "linear_fc2.bias" and site["evidence"]["mesh_dim"] == "tp"


def test_bf16_experts_pass_the_reference_and_identical_shards_are_flagged(tmp_path):
    """torchtitan's grouped experts compute in bf16: the reference tolerance follows that (no
    DTP904); torchtitan's DTensor init on a CPU mesh gives identical shards: a warning, and no
    false double-count."""
    rc, report, err = _confirm(tmp_path, HARNESS, "--reference")
    assert rc in (0, 1), err
    assert report["runtime_summary"]["sites_reached"] > 30
    assert not [f for f in report["findings"] if f["code"].startswith("DTP9")], report["findings"]
    rc, report, err = _confirm(tmp_path, HARNESS, "--reference", env={"TT_INIT": "dtensor"})
    assert rc in (0, 1), err
    assert not [f for f in report["findings"] if f["code"].startswith("DTP9")], report["findings"]
    assert "Shard-placed parameter(s) hold the same values on every rank" in err
    assert "--reference comparisons skipped" in err
