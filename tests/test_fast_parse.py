"""The fast front end (analysis/fast_parse.py) gives the analyzer the facts LibCST's tree gives,
positions included: on every fixture in every mode, on seeded mutants of them, on generated
programs, and on the shapes where the two parsers' trees or ranges differ most."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import hypothesmith
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placement_lint import cst_parse
from placement_lint.analysis import fast_parse
from placement_lint.facts import file_facts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HEADER = (
    "import torch\nimport torch.distributed as dist\n"
    "from torch.distributed.tensor import DTensor, Replicate, Shard, Partial, distribute_tensor\n\n"
)


def both(data: bytes, mode: str) -> tuple[str, str]:
    """The facts of `data` as JSON: with LibCST's tree, then with the fast front end's."""
    out = []
    for fast in (False, True):
        cst_parse.FAST = fast
        try:
            out.append(json.dumps(file_facts(data, mode), sort_keys=True))
        finally:
            cst_parse.FAST = True
    return out[0], out[1]


class Count:
    """How many texts the fast front end built, and how many it declined."""

    def __init__(self, monkeypatch):
        self.built = self.declined = 0
        real = fast_parse.parse

        def counted(source: str):
            module = real(source)
            if module is None:
                self.declined += 1
            else:
                self.built += 1
            return module

        monkeypatch.setattr(fast_parse, "parse", counted)


# (mode "" is compared through "positions": the same regions, and LibCST's tree has no positions
# to give for nothing, so its "" facts are unpositioned where the fast front end's are not)
@pytest.mark.parametrize("mode", ["positions", "full"])
def test_every_fixture_has_the_same_facts(mode, monkeypatch):
    count = Count(monkeypatch)
    paths = sorted(FIXTURES.rglob("*.py"))
    for path in paths:
        libcst, fast = both(path.read_bytes(), mode)
        assert fast == libcst, path
    assert count.built > len(paths) // 2 and count.declined <= 2  # the fast tree was the one analysed


#: where the AST and LibCST differ: parentheses in ranges, implicitly concatenated strings,
#: f-strings, non-ASCII columns, one-line blocks, keyword order, elif, subscripts, decorators
SHAPES = [
    "def f(x, w):\n    y = (x.to_local(), 0.0)\n    return (y[0]) @ ((w.to_local()))\n",
    "def f(x):\n    plan = {'a' 'b': (RowwiseParallel(use_local_output=True), 1), **x}\n    return plan\n",
    "def f(x):\n    h = x.to_local()\n    print(f\"{h.sum()} é {x.full_tensor()!r:>{w}}\", 'ü' \"v\")\n    return h\n",
    "def f(x, mesh): h = x.to_local(); y = h @ DTensor.from_local(h, mesh, [Shard(0)]).to_local(); return y\n",
    "class M:\n    def f(self, x): return x.to_local() * self.k\n    if True: k = 1\n",
    "def f(x, r):\n    if r: h = x.to_local()\n    elif x: h = x.full_tensor()\n    else:\n        if r: h = 0\n    return h[r:]\n",
    "def f(x, r, n):\n    h = x.to_local()\n    return g(h[r * n:(r + 1) * n, ...], *x, dim=1, **{'a': h})[(r, 1)], h[(r)]\n",
    "@torch.no_grad()\n@ deco\nasync def f(x, *a, k=(1), **kw):\n    async with x as (h, w): return [h.to_local() async for h in w]\n",
    "def f(x, r):\n    try:\n        h = x.to_local()\n    except* ValueError as e:\n        pass\n    return (h if r else x) and (h or x) or h\n",
    "def f(x, r):\n    return x.to_local() if r < (r) < 2 not in (1, 2) else lambda q=x.to_local(): q[r]\n",
    "def f(x, r):\n    a, *b = (x.to_local(),)\n    del a, b\n    while (n := r): yield from x.to_local()[n]\n",
    "def f(x, r):\n    h = x.to_local()\n    g(h,\n      (h[r]),  # a comment\n      key=(h))\n",
    "ф = 1\ndef f(x, r):\n    s = 'ünïcode'; h = x.to_local()[r]\n    return {'é': h, 'k': s}\n",
    "def f(x, r):\n    h = x.to_local()\n    g((h\n       for h in x), [i for i in h if i], {i: h for i in r})\n",
    "from torch.distributed.tensor import *\nfrom . import a as b\nimport a.b.c as d, e\n"
    "class C(B, *bases, metaclass=M, **kw):\n    global g\n    def f(self, x):\n        def inner():\n"
    "            nonlocal x\n            x: int = 1\n        assert x, 'm'\n        x += x.to_local()\n"
    "        raise ValueError() from x.to_local()\n",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_have_the_same_facts(shape, monkeypatch):
    count = Count(monkeypatch)
    data = (HEADER + shape).encode()
    for mode in ("positions", "full"):
        libcst, fast = both(data, mode)
        assert fast == libcst
    assert count.built and not count.declined


def test_a_one_line_block_is_analysed():
    """`def f(x): return x.to_local()`: LibCST holds a one-line block's statements bare (no
    statement line around them); the analyzer used to skip them. Both front ends now see it."""
    data = (HEADER + "def f(x, w, mesh): return x.to_local() @ DTensor.from_local(w, mesh, [Shard(0)]).to_local()\n").encode()
    for fast in (False, True):
        cst_parse.FAST = fast
        try:
            sites = file_facts(data, "full")["sites"]
        finally:
            cst_parse.FAST = True
        assert [s["kind"] for s in sites] == ["exit"]  # (from_local(...).to_local() is no exit)
        assert sites[0]["pos"] == [5, 27, 5, 39] and sites[0]["meets"] == ["meets the local shard of a Shard DTensor"]


@pytest.mark.parametrize("text, why", [
    ("match x:\n    case 1:\n        y = x.to_local()\n", "a match statement"),
    ("def f(:\n", "a syntax error"),
    ("x = 'a\0b'\n", "a NUL byte"),
    ("s = (\n" + "(" * 250 + "1" + ")" * 250 + ")\n", "nesting CPython's parser refuses"),
])
def test_it_declines_what_it_does_not_reproduce(text, why):
    assert fast_parse.parse(text) is None, why


@pytest.mark.skipif(sys.version_info < (3, 12), reason="type parameters are Python 3.12 syntax")
def test_it_declines_type_parameters():
    assert fast_parse.parse("def f[T](x: T) -> T:\n    return x\n") is None


def test_ranges_are_libcsts_positions():
    """Every node's range, as LibCST's PositionProvider gives it, on nodes the analyzer may ask
    about (calls, subscripts, names, attributes, arguments, elements, tuples)."""
    import libcst as cst

    from placement_lint.analysis.positions import table

    text = SHAPES[0] + SHAPES[6] + SHAPES[12]
    fast = fast_parse.parse(text)
    cst_parse.FAST = False
    try:
        slow = cst_parse.parse_module(text)
    finally:
        cst_parse.FAST = True
    kinds = (cst.Call, cst.Subscript, cst.Name, cst.Attribute, cst.Arg, cst.Element, cst.Tuple, cst.Index, cst.DictElement)

    def walk(node, out):
        if isinstance(node, kinds):
            out.append((type(node).__name__, node))
        for child in node.children:
            walk(child, out)
        return out

    slow_ranges = table(slow)
    fast_nodes = [n for n in fast.ranges if isinstance(n, kinds)]
    slow_nodes = walk(slow, [])
    expected = sorted((k, slow_ranges[n]) for k, n in slow_nodes)
    got = sorted((type(n).__name__, fast.ranges[n]) for n in fast_nodes)
    assert got == expected


# -- mutants and generated programs ------------------------------------------------------------

#: seeded mutants of the fixtures compared per CI run (about 0.1 s each)
CI_MUTANTS = 120


def test_fixture_mutants_have_the_same_facts():
    from test_mutants import Donors, fixture_programs, mutate

    programs = fixture_programs()
    donors = Donors.from_programs([t for _, t in programs])
    rng = random.Random(23)
    compared = 0
    for i in range(CI_MUTANTS):
        path, src = programs[i % len(programs)]
        data = mutate(src, rng, donors).encode("utf-8", "surrogatepass")
        for mode in ("positions", "full"):
            libcst, fast = both(data, mode)
            if '"error": null' not in libcst:
                continue  # LibCST rejects what CPython accepts (a form feed in an indent): not comparable
            assert fast == libcst, f"a mutant of {path} in mode {mode!r}:\n{data.decode()}"
            compared += 1
    assert compared >= CI_MUTANTS


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(program=st.one_of(hypothesmith.from_grammar(), hypothesmith.from_node()), seed=st.integers(0, 2**32 - 1))
def test_generated_programs_have_the_same_facts(program, seed):
    from test_fuzz import inject_triggers

    data = inject_triggers(program, random.Random(seed)).encode("utf-8", "surrogatepass")
    libcst, fast = both(data, "full")
    if '"error": null' in libcst:
        assert fast == libcst


# -- the first pass positions as it goes ----------------------------------------------------------

def test_the_first_pass_is_positioned_as_the_positions_pass_would_be():
    """Mode "" positions what the fast tree gives for nothing; where every block was built so,
    its facts say "positioned" and equal the "positions" pass's (the engine then skips that pass)."""
    compared = 0
    for path in sorted(FIXTURES.rglob("*.py")):
        data = path.read_bytes()
        first = file_facts(data, "")
        if not first["sites"]:
            continue
        if not first["positioned"]:
            continue  # (a block the front end declined: a NUL byte in a string, rejected_string_literals.py)
        second = file_facts(data, "positions")
        assert {**first, "mode": ""} == {**second, "mode": ""}, path
        compared += 1
    assert compared >= 50


MATCH = HEADER + (
    "def routed(x, w, mesh, kind):\n"
    "    h = x.to_local()\n"
    "    match kind:\n"
    "        case 1:\n"
    "            return h @ DTensor.from_local(w, mesh, [Shard(0)]).to_local()\n"
    "\n"
    "def plain(x, w, mesh):\n"
    "    return x.to_local() @ DTensor.from_local(w, mesh, [Shard(0)]).to_local()\n"
)


def test_a_block_libcst_parsed_is_positioned_by_the_positions_pass(tmp_path):
    """A `match` statement: LibCST parses that function, so the first pass cannot position its
    finding ("positioned" is false) and the engine's positions pass does; the findings are those of
    a run on LibCST's trees alone."""
    import placement_lint

    first = file_facts(MATCH.encode(), "")
    assert first["positioned"] is False
    assert [s["pos"] for s in first["sites"]] == [None, [12, 12, 12, 24]]  # `routed`'s waits for phase three
    assert file_facts(MATCH.encode(), "positions")["sites"][0]["pos"] == [6, 9, 6, 21]

    def rows():
        found = placement_lint.lint_source(MATCH, "m.py", use_cache=False, cwd=tmp_path)
        return sorted((f.line, f.column, f.end_line, f.end_column, f.code) for f in found)

    fast = rows()
    cst_parse.FAST = False
    try:
        assert fast == rows() and len(fast) == 2
    finally:
        cst_parse.FAST = True
