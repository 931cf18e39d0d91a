"""Real multi-process runs with torchrun on gloo (CPU). Each launch costs a few seconds of
process start-up, so harnesses are batched: one launch per scenario."""
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import ROOT, run_cli

pytestmark = pytest.mark.multiprocess

PROG1 = "tests/runtime/programs/mlp_1d.py"
PROG2 = "tests/runtime/programs/mesh_2d.py"


def _launch(harnesses, nproc, timeout=90, keep_dir=None, watch=()):
    from placement_lint.runtime.launcher import LaunchOptions, launch

    return launch({"harnesses": harnesses, "cwd": str(ROOT), "watch": [list(w) for w in watch]},
                  LaunchOptions(nproc=nproc, backend="gloo", timeout=timeout, keep_dir=keep_dir))


def _site(res, line):
    return next(s for s in res["sites"] if s["line"] == line)


def _line_of(path, marker):
    for i, text in enumerate((ROOT / path).read_text().splitlines(), 1):
        if marker in text:
            return i
    raise AssertionError(marker)


def _fixture_harnesses():
    return sorted(str(p.relative_to(ROOT)) + ":harness" for p in (ROOT / "fixtures/harnesses").glob("[a-z]*.py"))


def test_4_ranks_2d_mesh_and_1d_programs():
    """4 ranks: a dp x tp mesh (planted bug / fixed twin) and the 1-D programs on 4 ranks."""
    out = _launch([f"{PROG2}:bug", f"{PROG2}:fixed", f"{PROG1}:bug", f"{PROG1}:fixed", f"{PROG1}:double"], 4)
    bug2, fixed2, bug1, fixed1, double1 = out["results"]
    s = _site(bug2, _line_of(PROG2, "LINE_BUG_2D"))
    assert s["verdict"] == "confirmed"
    ev = s["evidence"]
    assert ev["mesh_dim"] == "tp" and len(ev["group_ranks"]) == 2 and ev["max_rel_diff"] > 0.05
    assert set(ev["per_rank_grad_norms"]) == set(map(str, ev["group_ranks"]))
    assert {p["name"]: p["status"] for p in bug2["params"]}["scale"] == "diverging"
    assert all(s["verdict"] in ("refuted", "inconclusive") for s in fixed2["sites"])
    assert all(p["status"] != "diverging" for p in fixed2["params"])
    assert _site(bug1, _line_of(PROG1, "LINE_BUG"))["verdict"] == "confirmed"
    assert _site(fixed1, _line_of(PROG1, "LINE_FIXED"))["verdict"] == "refuted"
    assert _site(double1, _line_of(PROG1, "LINE_DOUBLE"))["verdict"] == "double-count"


def test_fixture_suite_2_ranks_with_verify_fix(tmp_path):
    """The whole fixture suite through the CLI: verdicts, runtime-only findings, proven fixes."""
    args = ["confirm", "fixtures/", "--nproc", "2", "--backend", "gloo", "--verify-fix", "--format", "json",
            "--timeout", "240"]
    for h in _fixture_harnesses():
        args += ["--harness", h]
    t0 = time.monotonic()
    proc = run_cli(args)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    by = {(f["code"], f["path"], f["line"]): f for f in data["findings"]}
    expect = {
        ("DTP102", "fixtures/moe_router/model.py", 63): "confirmed",
        ("DTP201", "fixtures/token_split.py", 38): "confirmed",
        ("DTP101", "fixtures/tp_expert_matmul.py", 33): "confirmed",
        ("DTP101", "fixtures/ep_full_tensor.py", 40): "confirmed",
        ("DTP101", "fixtures/rowwise_bias.py", 38): "confirmed",
        ("DTP103", "fixtures/local_map_branch.py", 40): "confirmed",
        ("DTP902", "fixtures/double_count.py", 29): "double-count",
    }
    for key, verdict in expect.items():
        assert key in by, (key, sorted(by))
        rt = by[key]["runtime"]
        assert rt["verdict"] == verdict, (key, rt)
        assert rt["evidence"]["fix_verified"]["verified"], (key, rt["evidence"]["fix_verified"])
    _assert_branch_double_count(by, 2)
    ddp = by[("DTP102", "fixtures/moe_router/model.py", 63)]["runtime"]["evidence"]
    assert ddp["module"] == "router.gate" and ddp["hook"] == "post" and ddp["mesh_dim"] == "tp"
    # runtime-only: diverging replicated parameters, and reference mismatches a cross-rank test misses
    codes = {(f["code"], f["path"]) for f in data["findings"]}
    assert ("DTP901", "fixtures/moe_router/model.py") in codes
    assert ("DTP904", "fixtures/double_count.py") in codes
    assert ("DTP904", "fixtures/branch_double_count.py") in codes  # proj: the branch counted twice
    assert ("DTP904", "fixtures/ep_full_tensor.py") in codes
    # fixed twins and negatives: nothing comes out of them
    assert not [f for f in data["findings"] if "_fixed" in f["path"] or "negatives" in f["path"]]
    # every finding is in the fixtures (a localized module is placed in user code, never in torch's
    # nn.Linear), and a parameter already reported as diverging (DTP901) is not localized again
    assert all(f["path"].startswith("fixtures/") for f in data["findings"]), [f["path"] for f in data["findings"]]
    assert ("DTP904", "fixtures/token_split.py") not in codes
    print(f"fixture suite, 2 ranks, reference + check + verify-fix: {elapsed:.1f}s")


def _assert_branch_double_count(by: dict, nproc: int) -> None:
    """The branch reduced twice (fixtures/branch_double_count.py): DTP902 at the from_local whose
    backward all-reduced, naming the boundary's Partial label as related location."""
    fixture = "fixtures/branch_double_count.py"
    key = ("DTP902", fixture, _line_of(fixture, "x = DTensor.from_local(x, mesh, [Replicate()])"))
    assert key in by, sorted(by)
    f = by[key]
    assert f["runtime"]["verdict"] == "double-count"
    boundary = _line_of(fixture, "# the boundary")
    assert [(r["path"], r["line"]) for r in f["related"]] == [(fixture, boundary)]
    assert f"counts {nproc}x" in f["message"]
    ev = f["runtime"]["evidence"]
    assert ev["reduced_again_by"].split("|")[2] == str(boundary) and len(ev["branch_grad_norms"]) == nproc


@pytest.mark.parametrize("nproc", [2, 4])
def test_branch_reduced_twice_is_a_double_count_with_both_sites(nproc):
    """A from_local(Replicate) whose input comes out of a Partial-labelled to_local: reported with
    and without --reference (per-site evidence: the branch's share of the gradient arrives
    identical on every rank); its fixed twin is silent."""
    harnesses = ["fixtures/harnesses/branch_double_count.py:harness",
                 "fixtures/harnesses/branch_double_count_fixed.py:harness"]
    for reference in (False, True):
        args = ["confirm", "fixtures/branch_double_count.py", "fixtures/branch_double_count_fixed.py",
                "--nproc", str(nproc), "--backend", "gloo", "--format", "json", "--timeout", "120"]
        args += [a for h in harnesses for a in ("--harness", h)] + (["--reference"] if reference else [])
        proc = run_cli(args)
        assert proc.returncode == 1, proc.stderr[-3000:]
        data = json.loads(proc.stdout)
        by = {(f["code"], f["path"], f["line"]): f for f in data["findings"]}
        _assert_branch_double_count(by, nproc)
        assert not [f for f in data["findings"] if "_fixed" in f["path"]]
        assert (("DTP904", "fixtures/branch_double_count.py") in {(c, p) for c, p, _ in by}) == reference
        if reference:
            # localized: the layer's output gradient matches the one-rank run, its input's does not,
            # by (nproc - 1) times the router's share
            # (at the parameter's finding: the double count is already reported at its site)
            proj = by[("DTP904", "fixtures/branch_double_count.py", _line_of("fixtures/branch_double_count.py",
                                                                             "self.proj = "))]
            assert "the gradient goes wrong inside `layer`" in proj["message"]
            assert f"input 0 gradient = reference + {nproc - 1}x the `layer.router` path" in proj["message"]
            assert [c for c, p, _ in by if p == "fixtures/branch_double_count.py"].count("DTP904") == 1


def test_fixture_suite_4_ranks():
    # the static finding's line is what makes the runtime watch a slice of a plain tensor
    watch = [(str(ROOT / "fixtures/token_split.py"), _line_of("fixtures/token_split.py", "expect: DTP201"))]
    out = _launch(_fixture_harnesses(), 4, timeout=240, watch=watch)
    res = {r["harness"].split("/")[-1].split(".")[0]: r for r in out["results"]}
    bad = {n: [s for s in r["sites"] if s["verdict"] in ("confirmed", "mixed", "double-count")] for n, r in res.items()}
    for name in ("moe_router", "token_split", "tp_expert_matmul", "ep_full_tensor", "rowwise_bias", "local_map_branch"):
        assert any(s["verdict"] == "confirmed" for s in bad[name]), name
    assert [s["verdict"] for s in bad["double_count"]] == ["double-count"]
    assert [(s["api"], s["verdict"]) for s in bad["branch_double_count"]] == [("from_local", "double-count")]
    for name, sites in bad.items():
        if name.endswith("_fixed") or name.startswith("negatives"):
            assert not sites, (name, sites)
            assert all(p["status"] != "diverging" for p in res[name]["params"]), name


def test_harness_exception_names_the_rank():
    from placement_lint.runtime.launcher import LaunchError

    t0 = time.monotonic()
    with pytest.raises(LaunchError) as info:
        _launch([f"{PROG1}:boom"], 2, timeout=60)
    msg = str(info.value)
    assert "rank 1 raised ValueError: planted failure on rank 1" in msg
    assert time.monotonic() - t0 < 40  # the other rank was stopped, not left waiting


def _procs_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append((pid, cmd))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to look for leftover processes")
def test_hang_times_out_and_leaves_no_process(tmp_path):
    from placement_lint.runtime.launcher import LaunchError

    keep = str(tmp_path / "hang")
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as info:
        _launch([f"{PROG1}:hang"], 2, timeout=8, keep_dir=keep)
    assert time.monotonic() - t0 < 25
    msg = str(info.value)
    assert "did not finish within --timeout 8s" in msg and "terminated" in msg
    time.sleep(0.5)
    assert _procs_mentioning(keep) == []


def test_taken_rendezvous_port_is_a_clear_error():
    from placement_lint.errors import UsageError
    from placement_lint.runtime.launcher import LaunchOptions, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UsageError, match="already in use"):
            launch({"harnesses": [f"{PROG1}:bug"], "cwd": str(ROOT)},
                   LaunchOptions(nproc=2, backend="gloo", timeout=30, rdzv_endpoint=f"localhost:{port}"))


def test_missing_backend_is_a_clear_error():
    import torch

    from placement_lint.errors import UsageError
    from placement_lint.runtime.launcher import resolve_backend

    if torch.cuda.device_count() >= 64:
        pytest.skip("machine has 64 GPUs")
    with pytest.raises(UsageError, match="nccl"):
        resolve_backend("nccl", 64)
    assert resolve_backend("auto", 64) == "gloo"


@pytest.mark.cuda
def test_nccl_fixture_suite_on_gpus():
    import torch
    import torch.distributed as dist

    if torch.cuda.device_count() < 2 or not dist.is_nccl_available():
        pytest.skip("needs 2 CUDA GPUs and NCCL")
    from placement_lint.runtime.launcher import LaunchOptions, launch

    out = launch({"harnesses": [f"{PROG1}:bug", f"{PROG1}:fixed"], "cwd": str(ROOT)},
                 LaunchOptions(nproc=2, backend="nccl", timeout=180))
    bug, fixed = out["results"]
    assert _site(bug, _line_of(PROG1, "LINE_BUG"))["verdict"] == "confirmed"
    assert _site(fixed, _line_of(PROG1, "LINE_FIXED"))["verdict"] == "refuted"
