"""Issue 11, deep code and big files: no file's code costs the run.

Each run builds the strange files in a tmp_path next to a real buggy file (a copy of
fixtures/tp_expert_matmul.py: DTP101 at 33:13) and runs the real CLI once over the directory, in
a subprocess with a timeout: no traceback, exit 1, every strange file either analysed (its own
copy of the fixture's DTP101 found) or reported as DTP000 with the precise reason, the real
finding still there. In process (a few files) and on the pool (--jobs 2, with a padding file
that takes the run past parallel.POOL_MIN_BYTES). Nothing here is timed: bench/hostile.py times
the same inputs; the scaling test below checks memory growth (allocations), not seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import hostile  # noqa: E402  (bench/hostile.py: the generators, shared with the benchmark)

FIXTURE = hostile.FIXTURE
FINDING = (33, 13, "DTP101")  # the fixture's finding, in every analysed copy


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, newline="")  # newlines exactly as given (CRLF cases)


def lint(root: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 240) -> dict[str, list[dict]]:
    """The real CLI over `root` (JSON): findings per file. Asserts exit 1 and no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "placement_lint", "--no-cache", "--format", "json", *args, "."],
        cwd=root, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:], proc.stdout[-3000:])
    report = json.loads(proc.stdout)
    assert report["errors"] == []
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        out.setdefault(f["path"], []).append(f)
    return out


def analysed(found: dict[str, list[dict]], name: str) -> None:
    """`name` was analysed: its copy of the fixture's finding is there, no DTP000."""
    got = [(f["line"], f["column"], f["code"]) for f in found.get(name, [])]
    assert FINDING in got and not any(code == "DTP000" for *_, code in got), (name, found.get(name))


def refused(found: dict[str, list[dict]], name: str, line: int, *words: str) -> str:
    """`name` is one DTP000 at `line` whose message holds `words`; returns the message."""
    errors = [f for f in found.get(name, []) if f["code"] == "DTP000"]
    assert len(errors) == 1 and errors[0]["line"] == line, (name, found.get(name))
    for word in words:
        assert word in errors[0]["message"], (word, errors[0]["message"])
    return errors[0]["message"]


#: CPython-valid nesting that once raised RecursionError (counts from issue 11): analysed now
DEEP_VALID = {
    "calls135.py": hostile.nested("calls", 135),
    "lists135.py": hostile.nested("lists", 135),
    "tuples135.py": hostile.nested("tuples", 135),
    "methods157.py": hostile.nested("methods", 157),
    "comps157.py": hostile.nested("comps", 157),
    "plus314.py": hostile.nested("plus", 314),
    "attrs314.py": hostile.nested("attrs", 314),
    "subs314.py": hostile.nested("subs", 314),
    "calls198.py": hostile.nested("calls", 197),  # 199 brackets with the fixture's own two: Python's limit is 200
    "elif1000.py": hostile.elifs(1000),
}


def form_feed_source() -> str:
    """The fixture with a form feed opening the first two lines of forward's body: CPython counts
    the indentation from the form feed, LibCST rejected it; the finding moves one column right."""
    lines = FIXTURE.split("\n")
    assert lines[31].startswith("        x = F.linear") and lines[32].startswith("        h = x.to_local()")
    lines[31], lines[32] = "\f" + lines[31], "\f" + lines[32]
    return "\n".join(lines)


def crlf_backslash_source() -> str:
    """The fixture with CRLF line ends, ending in a backslash continuation: valid for CPython,
    a tokenizer error for LibCST ("unexpected end of file after a line continuation")."""
    return "\r\n".join(FIXTURE.rstrip("\n").split("\n")) + "\r\nz = 1 \\\r\n"


def hostile_files() -> dict[str, str]:
    budget = "".join(f"\n\ndef heavy{i}(x):\n    return " + "g(" * 190 + "x.to_local()" + ")" * 190 + "\n" for i in range(30))
    return {
        "buggy.py": FIXTURE,
        **DEEP_VALID,
        "brackets250.py": hostile.nested("calls", 250),
        "chain400.py": hostile.nested("methods", 400),
        "budget.py": FIXTURE + budget,
        "neg3000.py": "from torch.distributed.tensor import DTensor\n\n\ndef f(x):\n    return " + "-" * 3000 + "x.to_local()\n",
        "formfeed.py": form_feed_source(),
        "crlf.py": crlf_backslash_source(),
        "syntax.py": "from torch.distributed.tensor import DTensor\n\n\ndef f(x:\n    return x.to_local()\n",
    }


def check_hostile(found: dict[str, list[dict]]) -> None:
    assert (FINDING[0], FINDING[1], FINDING[2]) in [(f["line"], f["column"], f["code"]) for f in found["buggy.py"]]
    for name in DEEP_VALID:
        analysed(found, name)
    refused(found, "brackets250.py", 34, "brackets nested 252 deep at line 34", "Python's limit of 200", "not analysed")
    refused(found, "chain400.py", 34, "expression nested 1,211 levels deep at line 34", "limit 1,000", "not analysed")
    refused(found, "budget.py", 51, "30 statements nested more than 100 levels deep", "too costly to parse", "not analysed")
    refused(found, "neg3000.py", 4, "nested too deep for Python's own parser", "not analysed")
    # the two CPython-valid forms LibCST rejected: analysed, columns as in the file
    assert [(f["line"], f["column"], f["code"]) for f in found["formfeed.py"]] == [(33, 14, "DTP101")]
    analysed(found, "crlf.py")
    # LibCST's own message and position, and what Python says
    message = refused(found, "syntax.py", 5, "could not parse: parser error: error at 5:11: expected one of")
    assert message.endswith("(Python: '(' was never closed at line 4)"), message


def test_hostile_code_in_process(tmp_path):
    write(tmp_path, hostile_files())
    check_hostile(lint(tmp_path))


def padding(size: int = 450_000) -> str:
    """Token-free source past parallel.POOL_MIN_BYTES: the run goes to the pool."""
    return "# padding: no trigger token\n" + "value = 1\n" * (size // 10)


def test_hostile_code_on_the_pool(tmp_path):
    from placement_lint.parallel import POOL_MIN_BYTES

    files = {**hostile_files(), "padding.py": padding(POOL_MIN_BYTES + 50_000)}
    files.update({f"copy{i}.py": FIXTURE for i in range(4)})
    write(tmp_path, files)
    found = lint(tmp_path, "--jobs", "2")
    check_hostile(found)
    for i in range(4):
        analysed(found, f"copy{i}.py")


def test_a_native_parser_crash_costs_only_its_file(tmp_path):
    """With the depth guard off (its test switch), LibCST really segfaults on 1,300 nested
    brackets (within a fraction of a second); the worker dies, the pool breaks. The file is
    rerun alone, crashes again, and becomes one DTP000; every other file is reported."""
    from placement_lint.analysis.depth import GUARD_ENV

    crash = "from torch.distributed.tensor import DTensor\n\n\ndef f(x):\n    return " + "[" * 1300 + "x.to_local()" + "]" * 1300 + "\n"
    files = {"buggy.py": FIXTURE, "crash.py": crash, "padding.py": padding(), "formfeed.py": form_feed_source()}
    files.update({f"copy{i}.py": FIXTURE for i in range(6)})
    write(tmp_path, files)
    found = lint(tmp_path, "--jobs", "2", env={GUARD_ENV: "off"})
    refused(found, "crash.py", 1, "parser crashed (signal 11: SIGSEGV)", "not analysed")
    for name in ["buggy.py", *(f"copy{i}.py" for i in range(6))]:
        analysed(found, name)
    assert [(f["line"], f["column"]) for f in found["formfeed.py"]] == [(33, 14)]
    # and with the guard on (the default), the same file never reaches LibCST
    found = lint(tmp_path, "--jobs", "2")
    refused(found, "crash.py", 5, "brackets nested 1,301 deep at line 5", "not analysed")


@pytest.mark.parametrize("jobs", ["2", "1"])
def test_a_file_slower_than_the_time_limit_costs_only_its_file(tmp_path, jobs):
    """A file whose analysis takes longer than the per-file limit (here 1 s; the default is 15
    minutes) has its worker killed (-j 1: its analysis interrupted) and becomes one DTP000 saying
    so; it is not run again, and every other file is reported."""
    slow = hostile.dense(600_000)  # several seconds of analysis here
    files = {"slow.py": slow, "padding.py": padding()}
    files.update({f"copy{i}.py": FIXTURE for i in range(4)})
    write(tmp_path, files)
    start = time.monotonic()
    found = lint(tmp_path, "--jobs", jobs, env={"PLACEMENT_LINT_FILE_TIMEOUT": "1"})
    refused(found, "slow.py", 1, "analysis timed out after 1 s", "file-timeout", "not analysed")
    for i in range(4):
        analysed(found, f"copy{i}.py")
    assert time.monotonic() - start < 60


# -- the pieces, directly ------------------------------------------------------------------------


def _kill_on_marker(items: list) -> list:
    """A pool function that dies like a native crash on the item "crash"."""
    out = []
    for item in items:
        if item == "crash":
            import faulthandler

            faulthandler.disable()  # (pytest's dump of the dying worker's stack: noise here)
            os.kill(os.getpid(), signal.SIGSEGV)
        out.append(item.upper())
    return out


def _sleep_on_marker(items: list) -> list:
    """A pool function that never ends on the item "slow"."""
    out = []
    for item in items:
        if item == "slow":
            time.sleep(120)
        out.append(item.upper())
    return out


def _one_bad_item(fn, marker: str, n: int, at: int, pool) -> str:
    """fn over n items on `pool`, item `at` being `marker`: the others must come back right;
    returns what the bad one got from on_crash."""
    items = [f"item{i}" for i in range(n)]
    items[at] = marker
    try:
        got = pool.map_weighted(fn, items, [10**6] * n, on_crash=lambda item, reason: f"{item}: {reason}")
    finally:
        pool.close()
    assert got[:at] + got[at + 1:] == [i.upper() for i in items[:at] + items[at + 1:]]
    return got[at]


def test_pool_kills_a_worker_stuck_on_one_item():
    from placement_lint.parallel import Pool, isolated

    start = time.monotonic()
    assert _one_bad_item(_sleep_on_marker, "slow", 30, 11, Pool(2, timeout=1.0)) == "slow: timed out after 1 s"
    assert time.monotonic() - start < 30  # killed, and not run a second time
    assert isolated(_sleep_on_marker, "slow", lambda item, reason: reason, timeout=0.5) == "timed out after 0.5 s"


def test_an_item_in_this_process_is_bounded_too():
    """A run too small for the pool (or -j 1) analyses in this process: a timer interrupts an item
    past the limit, the others come back, and the caller's SIGALRM handler is restored."""
    from placement_lint.parallel import Pool

    before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    pool = Pool(1, timeout=0.5)
    got = pool.map_weighted(_sleep_on_marker, ["a", "slow", "b"], [1, 1, 1], on_crash=lambda item, reason: f"{item}: {reason}")
    assert got == ["A", "slow: timed out after 0.5 s", "B"]
    assert time.monotonic() - start < 10 and not pool.running
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_pool_survives_a_dead_worker_and_names_the_item():
    from placement_lint.parallel import Pool, WorkerCrash

    assert _one_bad_item(_kill_on_marker, "crash", 40, 17, Pool(2)) == "crash: signal 11: SIGSEGV"
    items = [f"item{i}" for i in range(40)]
    items[17] = "crash"
    pool = Pool(2)
    try:
        with pytest.raises(WorkerCrash, match="signal 11"):  # no on_crash: said, not swallowed
            pool.map_weighted(_kill_on_marker, items, [10**6] * len(items))
    finally:
        pool.close()


def test_guard_verdicts():
    from placement_lint.analysis import depth

    assert depth.check("x = f(g(h(1)))\n") is depth.OK
    # brackets inside strings and comments are text
    assert depth.check("x = '" + "(" * 300 + "'  # " + "[" * 300 + "\n").error is None
    assert depth.check("x = " + "(" * 201 + "1" + ")" * 201 + "\n").error["message"].startswith("brackets nested 201 deep")
    assert depth.check("x = " + "(" * 200 + "1" + ")" * 200 + "\n").error is None  # Python's own maximum
    deep = depth.check("x = " + "g(" * 60 + "1" + ")" * 60 + "\n")
    assert deep.error is None and deep.deep
    # a long multi-line expression (a bracket open across its lines) is measured too
    verdict = depth.check("x = (a\n" + "    + a\n" * 1200 + ")\n", first_line=10)
    assert verdict.error["line"] == 10 and "levels deep" in verdict.error["message"]


def test_deep_path_restores_the_recursion_limit():
    from placement_lint.analysis import depth

    before = sys.getrecursionlimit()

    def recurse(n: int) -> int:
        return 0 if n == 0 else 1 + recurse(n - 1)

    assert depth.run_deep(recurse, 20_000) == 20_000
    assert sys.getrecursionlimit() == before
    with pytest.raises(ZeroDivisionError):
        depth.run_deep(lambda: 1 / 0)
    assert sys.getrecursionlimit() == before


def test_positions_table_is_libcst_position_provider():
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    from placement_lint.analysis.positions import table

    for path in sorted((REPO / "fixtures").rglob("*.py")) + [None]:
        source = path.read_text() if path else form_feed_source() + "\nz = [\n  1,\r\n  2]  # c\n\n"
        module = cst.parse_module(source.replace("\f", "")) if path is None else cst.parse_module(source)
        expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        got = table(module)
        assert got == {n: (r.start.line, r.start.column, r.end.line, r.end.column) for n, r in expected.items()}, path


def test_a_long_function_costs_linear_memory():
    """Each value used to keep every exit before it: memory quadratic in a function's length.
    Allocations (not time) for N and 2N lines: twice, not four times."""
    from placement_lint.facts import file_facts

    def peak(lines: int) -> int:
        data = hostile.long_function(lines * 48).encode()
        tracemalloc.start()
        try:
            assert file_facts(data, "")["error"] is None
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(50)  # (first use: imports, compiled patterns)
    small, large = peak(500), peak(1000)
    assert large < 2.6 * small, (small, large)  # quadratic: 3.7 times (measured with the cap lifted)


def test_lazy_blocks_give_the_eager_facts(monkeypatch):
    """A big file's undecorated defs are parsed when analysed and dropped after (analysis/lazy.py):
    the facts, positions included, are those of parsing every block first."""
    from placement_lint.analysis import parse
    from placement_lint.facts import file_facts

    nested = "\n\ndef outer(x, w):\n    def inner(y):\n        return y.to_local() @ w.to_local()\n    return inner(x)\n"
    sources = [p.read_bytes() for p in sorted((REPO / "fixtures").rglob("*.py"))]
    sources += [(hostile.dense(20_000) + nested).encode(), hostile.long_function(5_000).encode()]
    for data in sources:
        for mode in ("", "positions", "full"):
            monkeypatch.setattr(parse, "LAZY_FROM", 10**12)
            eager = json.dumps(file_facts(data, mode), sort_keys=True)
            monkeypatch.setattr(parse, "LAZY_FROM", 0)
            assert json.dumps(file_facts(data, mode), sort_keys=True) == eager, (mode, data[:60])
