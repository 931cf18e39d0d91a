"""`--backend sim`: all ranks in one process on torch's local-tensor simulation.

Skipped as a whole when this torch has no usable simulation. Each CLI run is one process (no
torchrun), a few seconds; the one comparison with gloo is marked multiprocess.
"""
import json
import os

import pytest

from tests.runtime.conftest import ROOT, run_cli

try:
    from placement_lint.runtime import sim as _sim

    _WHY = _sim.unsupported_reason()
except ImportError as exc:  # torch missing: conftest skips the folder anyway
    _sim, _WHY = None, str(exc)

pytestmark = pytest.mark.skipif(bool(_WHY), reason=f"local-tensor simulation unavailable: {_WHY}")

TP = ["fixtures/tp_expert_matmul.py", "--harness", "fixtures/harnesses/tp_expert_matmul.py:harness"]
TP_FIXED = ["fixtures/tp_expert_matmul_fixed.py", "--harness", "fixtures/harnesses/tp_expert_matmul_fixed.py:harness"]
PROG2 = "tests/runtime/programs/mesh_2d.py"


def _confirm(args, nproc=2, backend="sim", extra=()):
    proc = run_cli(["confirm", *args, "--nproc", str(nproc), "--backend", backend, "--format", "json", *extra],
                   timeout=240)
    data = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return proc, data


def _by_code(data):
    out = {}
    for f in data["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


def test_buggy_fixture_confirmed_and_fix_proven():
    """tp_expert_matmul: DTP101 at line 33 and DTP901 for `proj` confirmed, exit 1; with
    --verify-fix (one-rank reference + the fix injected) the fix is proven, all in sim."""
    proc, data = _confirm(TP, extra=["--verify-fix"])
    assert proc.returncode == 1, proc.stderr
    codes = _by_code(data)
    (f101,) = codes["DTP101"]
    assert f101["line"] == 33 and f101["runtime"]["verdict"] == "confirmed"
    ev = f101["runtime"]["evidence"]
    assert ev["mesh_dim"] == "tp" and ev["max_rel_diff"] > 0.05
    assert set(ev["per_rank_grad_norms"]) == {"0", "1"}
    assert ev["fix_verified"]["verified"] is True
    (f901,) = codes["DTP901"]
    assert f901["runtime"]["verdict"] == "confirmed" and "`proj`" in f901["message"]
    assert "DTP904" not in codes  # sim gradients match the one-rank reference where they should


def test_fixed_twin_not_flagged():
    proc, data = _confirm(TP_FIXED)
    assert proc.returncode == 0, proc.stderr
    assert all((f.get("runtime") or {}).get("verdict") == "refuted" for f in data["findings"])


def test_double_count_and_negatives_in_one_launch():
    proc, data = _confirm(["fixtures/double_count.py", "fixtures/negatives/replicated_gate.py",
                           "fixtures/negatives/sharded_local.py",
                           "--harness", "fixtures/harnesses/double_count.py:harness",
                           "--harness", "fixtures/harnesses/negatives_replicated_gate.py:harness",
                           "--harness", "fixtures/harnesses/negatives_sharded_local.py:harness"])
    assert proc.returncode == 1, proc.stderr
    bad = [(f["code"], os.path.basename(f["path"]), f["runtime"]["verdict"]) for f in data["findings"]
           if (f.get("runtime") or {}).get("verdict") != "refuted"]
    assert bad == [("DTP902", "double_count.py", "double-count")]


def test_2d_mesh_4_simulated_ranks():
    proc, data = _confirm([PROG2, "--harness", f"{PROG2}:bug", "--harness", f"{PROG2}:fixed"], nproc=4)
    assert proc.returncode == 1, proc.stderr
    line = next(i for i, t in enumerate((ROOT / PROG2).read_text().splitlines(), 1) if "LINE_BUG_2D" in t)
    f = next(f for f in data["findings"] if f["line"] == line)
    assert f["runtime"]["verdict"] == "confirmed"
    assert f["runtime"]["evidence"]["mesh_dim"] == "tp" and len(f["runtime"]["evidence"]["group_ranks"]) == 2


def test_rank_asking_fixture_refused_with_file_and_line():
    proc = run_cli(["confirm", "fixtures/ep_full_tensor.py", "--harness",
                    "fixtures/harnesses/ep_full_tensor.py:harness", "--backend", "sim"])
    assert proc.returncode == 2
    assert "--backend sim cannot run code that asks for its rank" in proc.stderr
    assert "fixtures/ep_full_tensor.py:41" in proc.stderr  # dist.get_rank(self.mesh.get_group())
    assert "--backend gloo" in proc.stderr


def test_rank_query_outside_paths_refused_at_run_time():
    """The fixture that asks for its rank is not in PATHS (the static scan cannot see it): the
    run itself stops at the call and names it."""
    proc = run_cli(["confirm", "fixtures/tp_expert_matmul.py", "--harness",
                    "fixtures/harnesses/moe_router.py:harness", "--backend", "sim"])
    assert proc.returncode == 2, proc.stderr
    assert "--backend sim cannot run code that asks for its rank" in proc.stderr
    assert "fixtures/moe_router/model.py:49" in proc.stderr  # self.mesh.get_local_rank()


def test_ctx_rank_through_a_helper_refused(tmp_path):
    (tmp_path / "helper_rank.py").write_text("def who(c):\n    return c.rank\n")
    (tmp_path / "h.py").write_text(
        "import torch\nfrom helper_rank import who\n\n\ndef harness(ctx):\n"
        "    try:\n        who(ctx)\n    except Exception:\n        pass  # swallowing it does not help\n"
        "    return torch.nn.Linear(2, 2)\n")
    proc = run_cli(["confirm", "fixtures/tp_expert_matmul.py", "--harness", f"{tmp_path}/h.py:harness",
                    "--backend", "sim"])
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path}/helper_rank.py:2: return c.rank" in proc.stderr


def test_missing_simulation_refused_with_the_way_out(tmp_path):
    """A torch without torch.distributed._local_tensor: exit 2, the missing name, --backend gloo."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch.distributed._local_tensor':\n"
        "            raise ImportError('No module named ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    proc = run_cli(["confirm", *TP, "--backend", "sim"],
                   env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 2
    assert "has no torch.distributed._local_tensor" in proc.stderr
    assert "--backend gloo" in proc.stderr


def test_missing_private_name_is_named(monkeypatch):
    import torch.distributed._local_tensor as lt

    monkeypatch.setattr(_sim, "_API", None)
    monkeypatch.delattr(lt, "maybe_disable_local_tensor_mode")
    why = _sim.unsupported_reason()
    assert "lacks maybe_disable_local_tensor_mode" in why and "--backend gloo" in why
    monkeypatch.undo()
    assert _sim.unsupported_reason() == ""


def test_split_payload_resolves_per_rank_values():
    P = _sim.PerRank
    payload = {"rank": 0, "sites": [{"mesh": {"coord": P({0: [0], 1: [1]})},
                                     "records": [{"fp": P({0: [1.0], 1: [2.0]})}]}],
               "params": {"w": {"fp": [3.0], "ref_rel_diff": P({0: 0.0, 1: 0.5})}}}
    p0, p1 = _sim.split_payload(payload, 2)
    assert (p0["rank"], p1["rank"], p1["world_size"]) == (0, 1, 2)
    assert p0["sites"][0]["records"][0]["fp"] == [1.0] and p1["sites"][0]["records"][0]["fp"] == [2.0]
    assert p1["sites"][0]["mesh"]["coord"] == [1] and p1["params"]["w"] == {"fp": [3.0], "ref_rel_diff": 0.5}


def test_generator_draws_are_identical_on_every_simulated_rank():
    """One torch.Generator stands for N generators seeded alike: every rank draws the same."""
    import torch

    api = _sim.load()
    with api.LocalTensorMode(3), _sim._same_draws_mode(api):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(4, 5, generator=g)
        b = torch.randn(4, 5, generator=g)
    ref = torch.Generator().manual_seed(0)
    ra, rb = torch.randn(4, 5, generator=ref), torch.randn(4, 5, generator=ref)
    for r in range(3):
        assert torch.equal(a._local_tensors[r], ra) and torch.equal(b._local_tensors[r], rb)


@pytest.mark.multiprocess
def test_same_numbers_as_gloo():
    """Not just the verdicts: the per-rank gradient norms equal gloo's."""
    _, sim = _confirm(TP)
    _, gloo = _confirm(TP, backend="gloo")

    def norms(data):
        return {(f["code"], f["line"]): f["runtime"]["evidence"]["per_rank_grad_norms"] for f in data["findings"]}

    assert norms(sim) == norms(gloo) and len(norms(sim)) == 2


def test_branch_reduced_twice_and_its_localization_in_sim():
    """The from_local double count and the --reference localization need per-rank sketches and
    from_local's backward share: both work on simulated ranks as on gloo."""
    proc, data = _confirm(["fixtures/branch_double_count.py", "fixtures/branch_double_count_fixed.py",
                           "--harness", "fixtures/harnesses/branch_double_count.py:harness",
                           "--harness", "fixtures/harnesses/branch_double_count_fixed.py:harness"],
                          extra=["--reference"])
    assert proc.returncode == 1, proc.stderr
    codes = _by_code(data)
    (f902,) = codes["DTP902"]
    assert f902["path"] == "fixtures/branch_double_count.py" and f902["runtime"]["verdict"] == "double-count"
    (f904,) = codes["DTP904"]
    assert "inside `layer`" in f904["message"] and "reference + 1x the `layer.router` path" in f904["message"]
    assert not [f for f in data["findings"] if "_fixed" in f["path"]]
