"""The analyzer never crashes on valid Python (statement soup; generated programs with DTensor
triggers injected), and region parsing never changes a finding."""

from __future__ import annotations

import hypothesmith
import libcst as cst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placement_lint.facts import file_facts
from placement_lint.prefilter import might_match

STATEMENTS = [
    "x = DTensor.from_local(x, mesh, [Replicate()])",
    "w = distribute_tensor(w, mesh, [Shard(0)])",
    "h = x.to_local()",
    "h = x.full_tensor()",
    "r = dist.get_rank()",
    "r = mesh.get_local_rank()",
    "o = r * n",
    "y = h[o:o + n]",
    "y = h.narrow(0, o, n)",
    "y = w.to_local().chunk(2)[r]",
    "y = h @ w.to_local().t()",
    "y = torch.cat([h, y])",
    "ids = torch.randint(0, 9, (4,))",
    "z = ids[o:o + n]",
    "self.g = nn.Parameter(distribute_tensor(g, mesh, [Replicate()]))",
    "y = self.g.to_local() + h",
    "f = partial(distribute_tensor, placements=[Replicate()])",
    "q = f(t, mesh).to_local()",
    "lm = local_map(fn, [Partial()], ([Replicate()],), None, mesh)",
    "plan = {'a': RowwiseParallel(use_local_output=True)}",
    "buf[o:o + n] = h",
    "a, b = h.chunk(2)",
    "for e in self.local_experts: y = e(h)",
    "return y",
    "return h",
    "pass",
]
HEADER = (
    "import torch\nimport torch.distributed as dist\nfrom torch import nn\nfrom functools import partial\n"
    "from torch.distributed.tensor import DTensor, Replicate, Shard, Partial, distribute_tensor\n"
    "from torch.distributed.tensor.experimental import local_map\n"
    "from torch.distributed.tensor.parallel import RowwiseParallel\n\n"
)


def program(body: list[str], wrappers: list[str]) -> str:
    lines = []
    indent = "        "
    for stmt, wrap in zip(body, wrappers):
        if wrap == "if":
            lines.append(f"{indent}if cond:\n{indent}    {stmt}")
        elif wrap == "with":
            lines.append(f"{indent}with torch.no_grad():\n{indent}    {stmt}")
        else:
            lines.append(indent + stmt)
    return HEADER + "class M(nn.Module):\n    def forward(self, x, w, g, t, mesh, n, fn, cond, buf):\n" + "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(STATEMENTS), min_size=1, max_size=12),
    st.lists(st.sampled_from(["", "if", "with"]), min_size=12, max_size=12),
)
def test_analyzer_total_and_region_invariant(body, wrappers):
    src = program(body, wrappers)
    cst.parse_module(src)  # the generator only makes valid Python
    # a module-level function without tokens next to the class: blanked by region parsing
    padded = src + "\n\ndef unrelated(a):\n    return [a] * 3\n"
    reduced = file_facts(padded.encode(), "positions")
    full = file_facts(padded.encode(), "full")
    assert reduced["error"] is None and full["error"] is None
    strip = lambda f: [s for s in f["sites"] if s["kind"] != "style_candidate"]  # noqa: E731
    assert strip(reduced) == strip(full)


def test_positions_of_methods_computed_alone_match_the_whole_file():
    """Positions for a site in a method of a large class are computed on that method alone
    (dedented, after its leading comments); they must equal the whole-file positions."""
    src = HEADER + (
        "class Big(nn.Module):\n"
        '    """Doc.\n\nwith a column-0 line inside."""\n'
        "    scale = 2\n\n"
        "    def unrelated(self, a):\n        return a + 1\n\n"
        "    # a comment before a decorated method\n"
        "    @torch.compile\n"
        "    def forward(self, x, w, mesh, n):\n"
        "        x = DTensor.from_local(x, mesh, [Replicate()])\n"
        "        w = distribute_tensor(w, mesh, [Shard(0)])\n"
        "        h = x.to_local()\n"
        "        r = dist.get_rank()\n"
        "        return (h @ w.to_local().t())[r * n:(r + 1) * n]\n\n"
        "    def other(self, y, n):\n"
        "        return y[dist.get_rank() * n:]\n"
    )
    fast = file_facts(src.encode(), "positions")
    full = file_facts(src.encode(), "full")
    key = lambda f: sorted((s["kind"], tuple(s["pos"])) for s in f["sites"] if s["kind"] != "style_candidate")  # noqa: E731
    assert key(fast) == key(full)
    assert len(key(fast)) >= 2


# -- generated programs (hypothesmith) with DTensor triggers injected ----------------------------

#: expressions that make the analyzer look: exits, DTensor entries, ranks, rank slices, styles
TRIGGER_EXPRS = [
    "x.to_local()", "x.full_tensor()", "self.w.to_local()", "x.to_local(grad_placements=(Partial(),))",
    "distribute_tensor(x, mesh, [Replicate()])", "DTensor.from_local(x, mesh, [Shard(0)])",
    "dist.get_rank()", "mesh.get_local_rank()", "h[dist.get_rank() * n:]", "w.to_local().chunk(2)[r]",
    "local_map(fn, [Partial()], ([Replicate()],), None, mesh)", "RowwiseParallel(use_local_output=True)",
    "partial(distribute_tensor, placements=[Replicate()])", "{'a': ColwiseParallel(), 'b': NoParallel()}",
]
#: always appended: the file passes the byte prefilter and has a site next to the generated code
TAIL = (
    "\n\nclass _Triggered(nn.Module):\n    def __init__(self, mesh):\n"
    "        self.w = distribute_tensor(torch.ones(4), mesh, [Replicate()])\n        self.k = self.w.to_local()\n\n"
    "    def forward(self, x):\n        return x[dist.get_rank()] * self.k\n"
)


def inject_triggers(program: str, rng) -> str:
    """A generated program with trigger statements and expressions put inside it (its bodies, its
    expressions), maybe as a method's body, after the DTensor imports; the tail keeps one site."""
    from test_mutants import Donors, Program, op_insert_donor, op_replace_stmt, op_wrap

    text = program if program.endswith("\n") else program + "\n"
    if rng.random() < 0.3:  # as the body of a method
        text = "class _G(nn.Module):\n    def forward(self, x, w, mesh, n, fn, cond, buf):\n        pass\n" + "".join(
            "        " + ln for ln in text.splitlines(keepends=True))
    text = HEADER + text
    donors = Donors(STATEMENTS, TRIGGER_EXPRS)

    def trigger_expr(p, r, d):
        exprs = p.exprs()
        return p.replace_span(r.choice(exprs), "(" + r.choice(d.exprs) + ")") if exprs else None

    for _ in range(rng.randint(1, 4)):
        p = Program(text)
        if p.tree is None:
            break
        out = rng.choice((op_insert_donor, op_insert_donor, trigger_expr, op_replace_stmt, op_wrap))(p, rng, donors)
        text = out if out is not None else text
    return text + TAIL


#: examples per CI run (hypothesmith's from_node is the slow part: ~0.2 s an example)
CI_GENERATED = 60


@settings(max_examples=CI_GENERATED, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(program=st.one_of(hypothesmith.from_grammar(), hypothesmith.from_node()), seed=st.integers(0, 2**32 - 1))
def test_generated_programs_never_crash_the_analyzer(program, seed, tmp_path_factory):
    """derandomize: the same examples every run (CI). The program is analysed for real (the
    prefilter passes it) in every facts mode and through the engine."""
    import random

    from test_mutants import Projects, check_facts

    text = inject_triggers(program, random.Random(seed))
    assert might_match(text.encode("utf-8", "surrogatepass"))
    check_facts(text)
    Projects(tmp_path_factory.mktemp("gen")).lint(text)


def test_injected_programs_stay_valid_python():
    """Injection must not break the generated program (else only the parse-error path would be
    fuzzed): every trigger statement is a whole line at a body's indent."""
    import ast
    import random

    programs = ["", "\n", "pass\n", "x = 1\n", "def f(a):\n    return a\n", "class C:\n\tdef m(self):\n\t\tpass\n",
                "if a:\n    for b in c:\n        d()\nelse:\n    e = 1\n", "async def g():\n    await h()\n"]
    for program in programs:
        for seed in range(20):
            ast.parse(inject_triggers(program, random.Random(seed)))
