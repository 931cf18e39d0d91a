"""Verdict logic on synthetic payloads: no processes, no torch needed."""
import pytest

from placement_lint.runtime import verdicts

pytestmark = pytest.mark.torch_free

N = verdicts.N_HEAD + 8


def fp(values):
    """A fingerprint of a gradient made of `values` (sampled in full)."""
    import math

    norm = math.sqrt(sum(v * v for v in values))
    l1 = sum(abs(v) for v in values)
    s = sum(values)
    amax = max(abs(v) for v in values)
    h = sum(v * math.sin(i * 12.9898 + 0.5) for i, v in enumerate(values))
    return [norm, l1, s, amax, h] + list(values) + [0.0] * (8 - len(values))


def payload(rank, coord, rec_fp, effective, api="to_local", dtype="float32", grad_placements=None):
    rec = {"grad": True, "fp": rec_fp, "dtype": dtype}
    if grad_placements:
        rec["grad_placements"] = grad_placements
    return {
        "rank": rank, "torch": "x", "params": {}, "forced_calls": 0,
        "sites": [{
            "id": "s", "api": api, "path": "/m.py", "line": 3, "function": "f", "module": "", "hook": "forward",
            "torch_frame": "", "calls": 1, "forward": ["Replicate()"] * len(coord), "declared": None,
            "effective": effective, "mesh": {"shape": [2] * len(coord), "dim_names": ["dp", "tp"][-len(coord):],
                                             "coord": coord},
            "dtype": dtype, "root": None, "slice_op": "", "local_map": "", "records": [rec],
        }],
    }


def site(payloads):
    return verdicts.compute(payloads)["sites"][0]


def test_replicate_label_differing_grads_is_confirmed():
    s = site([payload(0, [0], fp([1, 2, 3, 4]), ["R"]), payload(1, [1], fp([2, 1, 0, 5]), ["R"])])
    assert s["verdict"] == "confirmed"
    ev = s["evidence"]
    assert ev["mesh_dim"] == "tp" and ev["max_rel_diff"] > 0.1
    assert set(ev["per_rank_grad_norms"]) == {"0", "1"}
    assert ev["call_count"] == 1 and ev["torch_version"] == "x"


def test_replicate_label_identical_grads_is_refuted():
    g = fp([1, 2, 3, 4])
    assert site([payload(0, [0], g, ["R"]), payload(1, [1], list(g), ["R"])])["verdict"] == "refuted"


def test_partial_label_identical_nonzero_is_double_count():
    g = fp([1, 2, 3, 4])
    assert site([payload(0, [0], g, ["P"]), payload(1, [1], list(g), ["P"])])["verdict"] == "double-count"


def test_partial_label_differing_is_refuted():
    s = site([payload(0, [0], fp([1, 0, 3, 0]), ["P"]), payload(1, [1], fp([0, 2, 0, 4]), ["P"])])
    assert s["verdict"] == "refuted"


def test_mixed_identical_part_and_differing_part():
    # positions 0-3 identical and non-zero (replicated consumer), 4-7 differ (rank-dependent one)
    a = fp([1, 2, 3, 4, 5, 0, 7, 0])
    b = fp([1, 2, 3, 4, 0, 6, 0, 8])
    assert site([payload(0, [0], a, ["R"]), payload(1, [1], b, ["R"])])["verdict"] == "mixed"


def test_shard_label_is_inconclusive():
    s = site([payload(0, [0], fp([1, 2]), ["S"]), payload(1, [1], fp([3, 4]), ["S"])])
    assert s["verdict"] == "inconclusive"


def test_bf16_tolerance():
    a = fp([1.0, 2.0, 3.0, 4.0])
    b = fp([1.0, 2.0, 3.0, 4.004])  # a bf16-rounding-sized difference
    assert site([payload(0, [0], a, ["R"], dtype="bfloat16"), payload(1, [1], b, ["R"], dtype="bfloat16")])["verdict"] == "refuted"
    assert site([payload(0, [0], a, ["R"]), payload(1, [1], b, ["R"])])["verdict"] == "confirmed"


def test_2d_groups_compare_only_within_the_mesh_dim():
    # dp x tp: dp ranks see different data (label Shard on dp), tp pairs agree -> refuted
    g0, g1 = fp([1, 2, 3, 4]), fp([5, 6, 7, 8])
    ps = [payload(0, [0, 0], g0, ["S", "R"]), payload(1, [0, 1], list(g0), ["S", "R"]),
          payload(2, [1, 0], g1, ["S", "R"]), payload(3, [1, 1], list(g1), ["S", "R"])]
    assert site(ps)["verdict"] == "refuted"
    ps[3] = payload(3, [1, 1], fp([8, 7, 6, 5]), ["S", "R"])
    s = site(ps)
    assert s["verdict"] == "confirmed" and s["evidence"]["group_ranks"] == [2, 3]


def test_no_gradient_is_refuted_with_reason():
    p0 = payload(0, [0], None, ["R"])
    p1 = payload(1, [1], None, ["R"])
    for p in (p0, p1):
        p["sites"][0]["records"][0] = {"grad": False}
    s = site([p0, p1])
    assert s["verdict"] == "refuted" and "no gradient" in s["evidence"]["reason"]


def test_from_local_partial_grad_identical_is_double_count():
    g = fp([1, 2, 3])
    ps = [payload(r, [r], list(g), None, api="from_local", grad_placements=["P"]) for r in range(2)]
    assert site(ps)["verdict"] == "double-count"
