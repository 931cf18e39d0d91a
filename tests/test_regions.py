"""Region selection follows a rank to a subscript: a block is parsed for its rank slices only when
a value derived from a rank can reach a subscript or `narrow` in it (rank_flow.rank_reaches_slice).
Each case is checked twice: which defs are selected, and that the facts of the selected blocks
hold every rank slice that analysing the whole file finds."""

from __future__ import annotations

import textwrap

import pytest

from placement_lint.facts import file_facts
from placement_lint.regions import select_blocks

HEADER = "import torch\nimport torch.distributed as dist\n\n\n"

# (name of the def, its source, is it selected, does the analyzer find a rank slice in it): the
# selection over-approximates, so some selected defs hold no slice the analyzer reports
CASES = [
    # the rank reaches the slice through two assignments and a tuple unpacking
    ("chained", """
        def chained(x, n):
            r = dist.get_rank()
            lo, hi = r * n, (r + 1) * n
            start = lo
            return x[start:hi]
    """, True, True),
    # a narrow split over lines: the statement is read whole
    ("narrow_lines", """
        def narrow_lines(x, n):
            off = dist.get_rank() * n
            return x.narrow(
                0,
                off,
                n,
            )
    """, True, True),
    # a subscript opened on one line, indexed by the rank on the next
    ("open_bracket", """
        def open_bracket(x, n):
            r = dist.get_rank()
            return x[
                r * n : (r + 1) * n
            ]
    """, True, True),
    # a for loop's target carries the rank
    ("loop_target", """
        def loop_target(x, n):
            for r in [dist.get_rank()]:
                y = x[r]
            return y
    """, True, False),
    # the environment spelling of a rank
    ("env_rank", """
        def env_rank(x, n):
            r = int(os.environ["RANK"])
            return x[r * n :]
    """, True, False),
    # chunk()[rank]
    ("chunk_index", """
        def chunk_index(x, ws):
            return x.chunk(ws)[dist.get_rank()]
    """, True, True),
    # the rank is only logged and compared; the slicing is of unrelated data
    ("log_only", """
        def log_only(x, n):
            if dist.get_rank() == 0:
                print("rank", dist.get_rank())
            head = x[:n]
            return head
    """, False, False),
    # the rank is mentioned only in a docstring example and a comment
    ("doc_only", '''
        def doc_only(x, n):
            """Slice the head.

            >>> y = x[dist.get_rank() * n :]
            """
            # not dist.get_rank() here
            return x[:n]
    ''', False, False),
    # a name assigned from a rank is passed on, never subscripted with
    ("passed_on", """
        def passed_on(x, n):
            r = dist.get_rank()
            send(x, dst=r)
            return x[:n]
    """, False, False),
]


def _selected_defs(src: str) -> set[str]:
    return {name for name, _, _, _ in CASES if any(f"def {name}(" in text for _, text, _ in select_blocks(src))}


@pytest.mark.parametrize("name,body,selected,finds", CASES, ids=[c[0] for c in CASES])
def test_a_def_is_parsed_exactly_when_a_rank_can_reach_a_slice(name, body, selected, finds):
    src = HEADER + "import os\n" + textwrap.dedent(body)
    assert (name in _selected_defs(src)) is selected
    # whatever is left out held no rank slice: the selected blocks give the whole file's sites
    # (both positioned: "full" is "whole" with positions, "positions" the first pass's regions with them)
    whole = [s for s in file_facts(src.encode(), "full")["sites"] if s["kind"] == "rank_slice"]
    regions = [s for s in file_facts(src.encode(), "positions")["sites"] if s["kind"] == "rank_slice"]
    assert regions == whole
    assert bool(whole) is finds


CLASS_APART = HEADER + textwrap.dedent("""
    class Apart:
        def __init__(self, n):
            self.n = n

        def who(self):
            return dist.get_rank()

        def head(self, x):
            return x[: self.n]
""")

CLASS_TOGETHER = CLASS_APART + textwrap.dedent("""
    class Together(Apart):
        def __init__(self, n):
            self.n = n

        def mine(self, x):
            r = dist.get_rank()
            return x[r * self.n : (r + 1) * self.n]
""")


def test_a_class_whose_rank_and_slices_never_meet_is_dropped():
    # the class mentions a rank (in `who`) and slices (in `head`): once the only gate, now no
    # method holds both, so the class is not parsed at all
    assert not any("class Apart" in text for _, text, _ in select_blocks(CLASS_APART))
    together = [text for _, text, _ in select_blocks(CLASS_TOGETHER)]
    kept = next(t for t in together if "class Together" in t)
    assert "def mine" in kept and "def __init__" in kept
    sites = [s for s in file_facts(CLASS_TOGETHER.encode(), "")["sites"] if s["kind"] == "rank_slice"]
    assert [s["symbol"] for s in sites] == ["Together.mine"]


def test_a_name_ending_in_a_carrier_is_not_the_carrier():
    # `r` carries a rank at module level; `Tensor[` ends in r but is no mention of it
    src = HEADER + textwrap.dedent("""
        r = dist.get_rank()


        def annotated(x: Tensor, n):
            return x[:n]


        def uses(x, n):
            return x[r * n :]
    """)
    names = {n for n in ("annotated", "uses") if any(f"def {n}(" in t for _, t, _ in select_blocks(src))}
    assert names == {"uses"}


def _tokenize_string_lines(text: str) -> set[int]:
    """The reference: the lines Python's own tokenizer finds inside a string token that spans
    lines (0-based, its first line excluded)."""
    import io
    import tokenize

    out: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            out.update(range(tok.start[0], tok.end[0]))  # 1-based start line = 0-based next line
    return out


STRING_CASES = [
    'x = 1  # it\'s\nz = """doc\nmore"""\n',
    "a = 'x\\\ny'\nb = '''\n'''\n",
    'a = "a" "b"\n"""\n\n"""\n',
    "s = '''a\\'''\nb'''\n",
    'q = "\\\\"\n"""x\ny"""\n',
    'x = "\'"\n\'\'\'\n\'\'\'\n',
    'e = ""\nf = \'\'\ng = """\n"""\n',
    "h = r'''\\\n'''  # '''\n",
    'd = {"k": """\n"""}  # """\n',
    "f'{x}' '''\nq'''\n",
]


@pytest.mark.parametrize("text", STRING_CASES)
def test_string_lines_match_the_tokenizer(text):
    from placement_lint.regions import _string_lines

    assert _string_lines(text) == _tokenize_string_lines(text)


def test_string_lines_match_the_tokenizer_on_the_fixtures():
    from pathlib import Path

    from placement_lint.regions import _string_lines

    files = sorted((Path(__file__).parent.parent / "fixtures").rglob("*.py"))
    assert len(files) > 40
    for path in files:
        text = path.read_text()
        assert _string_lines(text) == _tokenize_string_lines(text), path


def test_tuple_targets_carry_a_token_to_the_code_that_reads_them():
    """`self.a, self.b = x.to_local(), y` makes `self.b` a carrier as `self.b = x.to_local()`
    does: the method that reads it is parsed; a keyword argument read from the line start
    (`f(a, b=x.to_local())`) assigns nothing."""
    text = textwrap.dedent("""
        import torch

        g, h = torch.zeros(1), DT.to_local()
        call(a, k=DT.to_local())


        def reads_h(x):
            return x * h


        def reads_k(x):
            return x * k


        class M:
            def __init__(self, dt):
                self.a, (self.b, c) = dt.to_local(), (1, 2)

            def reads_b(self, x):
                return x * self.b

            def unrelated(self, x):
                return x + 1
    """)
    kept = "".join(src for _, src, _ in select_blocks(text))
    assert "def reads_h" in kept and "return x * self.b" in kept
    assert "def reads_k" not in kept and "return x + 1" not in kept
