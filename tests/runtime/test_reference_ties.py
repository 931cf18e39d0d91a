"""Where the cross-rank comparison alone is blind, and what settles it: identical shards
(downgraded, with a warning), the reference tolerance following the compute precision, and a
parameter site tied to the reference (a gradient 1/k on every rank is `confirmed`; identical
Partial addends that match the reference are not a double count)."""
import json

import pytest

from placement_lint.runtime import verdicts
from tests.runtime.conftest import run_cli
from tests.runtime.test_verdicts import fp


def _payload(rank, *, value=None, placements=("S",), label="P", grad=(1.0, 2.0, 3.0, 4.0),
             ref_rel=None, ref_scale=None, low=(), dtype="float32", params_at_site=("w",)):
    mesh = {"shape": [2], "dim_names": ["tp"], "coord": [rank]}
    param = {"dtensor": True, "placements": list(placements), "placement_strs": [], "mesh": mesh,
             "dtype": dtype, "grad": True, "grad_placements": list(placements), "fp": fp([1.0, 1.0, 2.0])}
    if value is not None:
        param["value"] = fp(value)
    if ref_rel is not None:
        param["ref"] = {"rel_diff": ref_rel, "scale": list(ref_scale) if ref_scale is not None else None}
    return {
        "rank": rank, "torch": "x", "forced_calls": 0, "low_precision": list(low),
        "params": {"w": param},
        "sites": [{
            "id": "s", "api": "to_local", "path": "/m.py", "line": 3, "function": "f", "module": "",
            "hook": "forward", "torch_frame": "", "calls": 1, "forward": ["Replicate()"], "declared": None,
            "effective": [label], "mesh": mesh, "dtype": dtype, "root": None, "slice_op": "", "local_map": "",
            "params": list(params_at_site),
            "records": [{"grad": True, "fp": fp(list(grad)), "dtype": dtype}],
        }],
    }


pure = pytest.mark.torch_free


@pure
def test_identical_shards_downgrade_double_count_and_warn():
    shard = [0.3, -1.2, 0.7, 2.0]
    res = verdicts.compute([_payload(0, value=shard, params_at_site=()),
                            _payload(1, value=list(shard), params_at_site=())])
    s = res["sites"][0]
    assert s["verdict"] == "inconclusive"
    assert s["evidence"]["downgraded_from"] == "double-count"
    assert "identical shards" in s["evidence"]["reason"]
    assert len(res["warnings"]) == 1 and "`w`" in res["warnings"][0] and "`tp`" in res["warnings"][0]


@pure
def test_identical_shards_void_the_reference_comparison():
    shard = [0.3, -1.2, 0.7, 2.0]
    res = verdicts.compute([_payload(r, value=list(shard), ref_rel=0.7, ref_scale=(0.4, 0.8), params_at_site=())
                            for r in (0, 1)])
    p = res["params"][0]
    assert "matches_reference" not in p and p["reference_skipped"] == "identical shards"
    assert any("--reference comparisons skipped" in w for w in res["warnings"])


@pure
def test_distinct_or_constant_shards_keep_the_verdict():
    distinct = verdicts.compute([_payload(0, value=[0.3, -1.2, 0.7, 2.0], params_at_site=()),
                                 _payload(1, value=[1.1, 0.2, -0.5, 0.9], params_at_site=())])
    assert distinct["sites"][0]["verdict"] == "double-count" and "warnings" not in distinct
    ones = verdicts.compute([_payload(0, value=[1.0] * 4, params_at_site=()),
                             _payload(1, value=[1.0] * 4, params_at_site=())])
    assert ones["sites"][0]["verdict"] == "double-count" and "warnings" not in ones


@pure
def test_identical_shards_downgrade_refuted_replicate_label_too():
    shard = [0.3, -1.2, 0.7, 2.0]
    res = verdicts.compute([_payload(0, value=shard, label="R", params_at_site=()),
                            _payload(1, value=list(shard), label="R", params_at_site=())])
    assert res["sites"][0]["verdict"] == "inconclusive"
    assert res["sites"][0]["evidence"]["downgraded_from"] == "refuted"


@pure
@pytest.mark.parametrize("low, rel, matches", [
    ((), 4e-3, False),               # fp32 compute: 4e-3 is not rounding
    (("bfloat16",), 4e-3, True),     # bf16 matmuls: within bf16 rounding
    (("bfloat16",), 0.5, False),     # a dropped reduction stays visible under bf16
    (("float16",), 0.02, True),
])
def test_reference_tolerance_follows_compute_precision(low, rel, matches):
    res = verdicts.compute([_payload(r, placements=("R",), ref_rel=rel, low=low, params_at_site=())
                            for r in (0, 1)])
    p = res["params"][0]
    assert p["matches_reference"] is matches
    assert p["compute_dtype"] == (low[0] if low else "float32")
    assert p["reference_tolerance"] == verdicts.ref_rtol(p["compute_dtype"])


@pure
def test_uniform_one_over_k_gradient_confirms_the_parameter_site():
    same = (1.0, 2.0, 3.0, 4.0)
    res = verdicts.compute([_payload(r, placements=("R",), label="R", grad=same, ref_rel=0.5,
                                     ref_scale=(0.5, 1.0)) for r in (0, 1)])
    s = res["sites"][0]
    assert s["verdict"] == "confirmed"
    assert s["evidence"]["parameter"] == "w" and s["evidence"]["mesh_dim"] == "tp"
    assert s["evidence"]["mesh_dim_index"] == 0 and "1/2" in s["evidence"]["detail"]


@pure
@pytest.mark.parametrize("scale", [(0.8, 1.0), (0.5, 0.7)])
def test_other_reference_mismatches_leave_the_site_refuted(scale):
    """Off by a factor that is not 1/k, or not a uniform scaling: the site is not the cause."""
    res = verdicts.compute([_payload(r, placements=("R",), label="R", ref_rel=0.5, ref_scale=scale)
                            for r in (0, 1)])
    assert res["sites"][0]["verdict"] == "refuted"
    assert res["params"][0]["matches_reference"] is False


@pure
def test_partial_addends_matching_the_reference_are_not_a_double_count():
    res = verdicts.compute([_payload(r, placements=("R",), label="P", ref_rel=1e-7, ref_scale=(1.0, 1.0))
                            for r in (0, 1)])
    s = res["sites"][0]
    assert s["verdict"] == "refuted" and s["evidence"]["downgraded_from"] == "double-count"
    no_ref = verdicts.compute([_payload(r, placements=("R",), label="P") for r in (0, 1)])
    assert no_ref["sites"][0]["verdict"] == "double-count"
    assert "--reference" in no_ref["sites"][0]["evidence"]["reference_hint"]


# ---- on a real gloo mesh ---------------------------------------------------------------------

PROG = "tests/runtime/programs/uniform_grads.py"


def _line(marker):
    from tests.runtime.conftest import ROOT

    return next(i for i, t in enumerate((ROOT / PROG).read_text().splitlines(), 1) if marker in t)


@pytest.mark.multiprocess
def test_scaled_bias_confirmed_by_reference_and_fix_proven():
    proc = run_cli(["confirm", PROG, "--harness", f"{PROG}:scaled_bias", "--harness", f"{PROG}:scaled_bias_fixed",
                    "--nproc", "2", "--backend", "gloo", "--reference", "--verify-fix", "--format", "json",
                    "--timeout", "180"])
    assert proc.returncode == 1, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    at = {(f["code"], f["line"]): f for f in data["findings"]}
    bug_line = _line("LINE_SCALED_BIAS")
    site = next(f for (code, line), f in at.items() if line == bug_line)
    rt = site["runtime"]
    assert rt["verdict"] == "confirmed", rt
    assert rt["evidence"]["parameter"] == "bias" and rt["evidence"]["mesh_dim"] == "tp"
    assert rt["evidence"]["fix_verified"]["verified"], rt["evidence"]["fix_verified"]
    dtp904 = at[("DTP904", _line("self.bias = "))]
    assert "0.5x the reference on every rank" in dtp904["message"]
    assert "tolerance 0.001 for float32 compute" in dtp904["message"]
    # the fixed twin: identical Partial addends that match the reference are no double count
    assert not [f for f in data["findings"] if f["line"] == _line("LINE_BIAS_FIXED")]


@pytest.mark.multiprocess
def test_identical_shards_on_a_real_mesh():
    from placement_lint.runtime.launcher import LaunchOptions, launch
    from tests.runtime.conftest import ROOT

    out = launch({"harnesses": [f"{PROG}:identical_shards", f"{PROG}:distinct_shards"], "cwd": str(ROOT)},
                 LaunchOptions(nproc=2, backend="gloo", timeout=120))
    same, distinct = out["results"]
    line = _line("LINE_PARTIAL")
    s_same = next(s for s in same["sites"] if s["line"] == line)
    s_distinct = next(s for s in distinct["sites"] if s["line"] == line)
    assert s_same["verdict"] == "inconclusive" and s_same["evidence"]["downgraded_from"] == "double-count"
    assert any("same values on every rank" in w for w in same["warnings"])
    assert s_distinct["verdict"] == "refuted" and not distinct.get("warnings")


@pure
def test_reference_rtol_overrides_the_precision_tolerance():
    res = verdicts.compute([_payload(r, placements=("R",), ref_rel=4e-3, params_at_site=()) for r in (0, 1)],
                           reference_rtol=1e-2)
    p = res["params"][0]
    assert p["matches_reference"] is True and p["reference_tolerance"] == 1e-2
    assert p["tolerance_source"] == "--reference-rtol"


def test_reference_rtol_needs_the_reference():
    proc = run_cli(["confirm", PROG, "--harness", f"{PROG}:scaled_bias", "--reference-rtol", "0.2"])
    assert proc.returncode == 2 and "--reference-rtol needs --reference" in proc.stderr
    proc = run_cli(["confirm", PROG, "--harness", f"{PROG}:scaled_bias", "--reference", "--reference-rtol", "-1"])
    assert proc.returncode == 2 and "--reference-rtol" in proc.stderr


@pytest.mark.multiprocess
def test_reference_rtol_reaches_the_ranks():
    """A tolerance above the planted 1/2 gradient hides it: the flag travels to the verdicts."""
    proc = run_cli(["confirm", PROG, "--harness", f"{PROG}:scaled_bias", "--nproc", "2", "--backend", "gloo",
                    "--reference", "--reference-rtol", "0.6", "--format", "json", "--timeout", "180"])
    data = json.loads(proc.stdout)
    assert not [f for f in data["findings"] if f["code"] == "DTP904"], data["findings"]
    site = next(f for f in data["findings"] if f["line"] == _line("LINE_SCALED_BIAS"))
    assert site["runtime"]["verdict"] == "refuted"
