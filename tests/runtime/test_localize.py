"""Localization of a wrong gradient (--reference): sketch algebra and module selection.

The sketch of a tensor is the sum of the sketches of its shards placed at their global offsets,
so rank sketches rebuild the full gradient's sketch from the placements alone; the pure logic
then picks the innermost module whose output gradient matches the reference and whose input
(or own parameter) gradient does not."""
import pytest

from placement_lint.runtime import localize


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_sketch_of_shards_adds_up_to_the_sketch_of_the_whole(torch):
    from placement_lint.runtime.gradprobe import sketch

    g = torch.randn(6, 10, dtype=torch.float64)
    whole = sketch(g, [6, 10], [0, 0])
    rows = sketch(g[:3], [6, 10], [0, 0]) + sketch(g[3:], [6, 10], [3, 0])
    cols = sketch(g[:, :5], [6, 10], [0, 0]) + sketch(g[:, 5:], [6, 10], [0, 5])
    assert torch.allclose(rows, whole) and torch.allclose(cols, whole)
    # a shard placed at the wrong offset, a permuted or doubled tensor: another sketch
    assert not torch.allclose(sketch(g[:3], [6, 10], [3, 0]) + sketch(g[3:], [6, 10], [0, 0]), whole)
    assert not torch.allclose(sketch(g.flip(0), [6, 10], [0, 0]), whole)
    assert torch.allclose(sketch(2 * g, [6, 10], [0, 0]), 2 * whole)


def _rec(module, slot, sketch, call=0, **kw):
    return dict({"module": module, "call": call, "slot": slot, "sketch": sketch, "shape": [4]}, **kw)


def _payloads(per_rank):
    return [{"rank": r, "probe": recs} for r, recs in enumerate(per_rank)]


R, PATH = [1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.25, 2.0]
OUT = [3.0, 0.0, -1.0, 1.0]


def test_rebuild_follows_the_placements():
    shard = {0: {"sketch": [1.0, 0.0], "kinds": ["S"], "coord": [0]}, 1: {"sketch": [0.0, 2.0], "kinds": ["S"], "coord": [1]}}
    assert localize.rebuild(shard) == [("dtensor", [[1.0, 2.0]])]
    repl = {0: {"sketch": [1.0, 2.0], "kinds": ["R", "P"], "coord": [0, 0]},
            1: {"sketch": [3.0, 4.0], "kinds": ["R", "P"], "coord": [0, 1]},
            2: {"sketch": [9.0, 9.0], "kinds": ["R", "P"], "coord": [1, 0]},
            3: {"sketch": [9.0, 9.0], "kinds": ["R", "P"], "coord": [1, 1]}}
    assert localize.rebuild(repl) == [("dtensor", [[4.0, 6.0]])]  # one replica, its Partial addends summed
    plain = {0: {"sketch": [1.0, 2.0]}, 1: {"sketch": [1.0, 2.0]}}
    assert localize.rebuild(plain) == [("replicated", [[1.0, 2.0], [1.0, 2.0]]), ("partial", [[2.0, 4.0]])]


def test_innermost_module_whose_input_goes_wrong_with_the_path_that_explains_it():
    """`layer` receives reference + 1x the router's input gradient (a branch counted twice on two
    ranks); its output, the router's input and output, and the root's output agree."""
    ref = [_rec("", "out0", OUT), _rec("layer", "out0", OUT), _rec("layer", "in0", R),
           _rec("layer.router", "in0", PATH), _rec("layer.router", "out0", OUT)]
    wrong_in = [r + p for r, p in zip(R, PATH)]  # as a DTensor Partial gradient: the ranks add up
    ranks = []
    for rank in range(2):
        ranks.append([_rec("", "out0", OUT), _rec("layer", "out0", OUT),
                      _rec("layer", "in0", [x / 2 for x in wrong_in], kinds=["P"], coord=[rank]),
                      _rec("layer.router", "in0", PATH), _rec("layer.router", "out0", [x / 2 for x in OUT])])
    sites = [{"api": "to_local", "path": "m.py", "line": 9, "module": "layer", "hook": "", "verdict": "refuted",
              "evidence": {"declared_grad_placements": ["Partial()"]}},
             {"api": "to_local", "path": "m.py", "line": 3, "module": "head", "hook": "", "verdict": "refuted"}]
    out = localize.localize(_payloads(ranks), ref, 1e-3, sites, [])
    assert [loc["module"] for loc in out] == ["layer"]
    assert "input 0 gradient = reference + 1x the `layer.router` path" in out[0]["summary"]
    assert [(s["path"], s["line"]) for s in out[0]["sites"]] == [("m.py", 9)]  # only what runs inside it
    # the same run with the right gradient: nothing to localize
    ranks[0][2]["sketch"], ranks[1][2]["sketch"] = [x / 2 for x in R], [x / 2 for x in R]
    assert localize.localize(_payloads(ranks), ref, 1e-3, sites, []) == []


def test_a_wrong_own_parameter_localizes_to_its_module_and_a_wrong_output_does_not():
    ref = [_rec("", "out0", OUT), _rec("mlp", "out0", OUT), _rec("mlp", "in0", R)]
    good = [_rec("", "out0", OUT), _rec("mlp", "out0", OUT), _rec("mlp", "in0", R)]
    params = [{"name": "mlp.w", "matches_reference": False, "reference_scale": {"0": [2.0, 1.0]}}]
    out = localize.localize(_payloads([good, good]), ref, 1e-3, [], params)
    assert [loc["module"] for loc in out] == ["mlp"] and "parameter `mlp.w` gradient = 2x the reference" in out[0]["summary"]
    # a parameter whose replicas already diverge (DTP901) is no evidence of where it went wrong
    diverging = [dict(params[0], status="diverging")]
    assert localize.localize(_payloads([good, good]), ref, 1e-3, [], diverging) == []
    # an output that already disagrees: the error came from outside (downstream) this module
    bad_out = [_rec("", "out0", OUT), _rec("mlp", "out0", [9.0, 9.0, 9.0, 9.0]), _rec("mlp", "in0", [0.0] * 4)]
    assert [loc["module"] for loc in localize.localize(_payloads([bad_out, bad_out]), ref, 1e-3, [], [])] == []


def test_shapes_or_calls_the_reference_lacks_are_not_compared():
    ref = [_rec("", "out0", OUT)]
    other = [_rec("", "out0", OUT), _rec("experts.0", "in0", R)]  # an expert only the sharded run has
    assert localize.compare(_payloads([other, other]), ref, 1e-3).keys() == {("", 0, "out0")}
    shaped = [dict(_rec("", "out0", OUT), shape=[2])]
    assert localize.compare(_payloads([shaped, shaped]), ref, 1e-3) == {}
