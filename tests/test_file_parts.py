"""A big file analysed in parts across the pool (placement_lint/file_parts.py): the merged facts are
those of one whole analysis, or the merge refuses and the file is analysed in one piece."""

from __future__ import annotations

import json
import random

import pytest

from placement_lint import file_parts
from placement_lint.analysis import parse
from placement_lint.facts import file_facts

from conftest import REPO
from test_mutants import Donors, fixture_programs, mutate

import sys

sys.path.insert(0, str(REPO / "bench"))
import hostile  # noqa: E402

NESTED = "\n\ndef outer(x, w):\n    def inner(y):\n        return y.to_local() @ w.to_local()\n    return inner(x)\n"


@pytest.fixture
def every_def_lazy(monkeypatch):
    """Every undecorated top-level def parsed lazily, whatever the file's size: small files split."""
    monkeypatch.setattr(parse, "LAZY_FROM", 0)


def split(data: bytes, mode: str, n: int) -> dict | None:
    return file_parts.merge([file_facts(data, mode, (k, n)) for k in range(n)])


def same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_parts_merge_into_the_whole_files_facts(every_def_lazy):
    sources = [p.read_bytes() for p in sorted((REPO / "fixtures").rglob("*.py"))]
    sources += [(hostile.dense(20_000) + NESTED).encode(), hostile.long_function(3_000).encode(), hostile.quiet(10_000).encode()]
    merged = refused = 0
    for data in sources:
        # (the engine's order: a part's positions pass reuses its first pass's regions)
        for mode in ("/skip-test-rank", "positions/skip-test-rank", "full"):
            whole = file_facts(data, mode)
            for n in (2, 3):
                got = split(data, mode, n)
                if got is None:
                    refused += 1
                    continue
                assert same(got, whole), (mode, n, data[:80])
                merged += 1
    # nearly every file merges (the fixture whose module-level exit meets a function refuses)
    assert merged > 10 * refused, (merged, refused)


def test_mutants_merge_into_the_whole_files_facts_or_refuse(every_def_lazy):
    """Seeded mutants of the fixtures (functions moved, renamed, duplicated, wrapped...)."""
    programs = fixture_programs()
    donors = Donors.from_programs([t for _, t in programs])
    rng = random.Random(5)
    merged = 0
    for i in range(60):
        _, src = programs[i % len(programs)]
        data = mutate(src, rng, donors).encode("utf-8", "surrogatepass")
        whole = file_facts(data, "positions")
        got = split(data, "positions", 2)
        if got is not None:
            assert same(got, whole), data.decode("utf-8", "surrogatepass")
            merged += 1
    assert merged >= 30


HEADER = "import torch\nfrom torch.distributed.tensor import DTensor, Shard, Replicate\n\n"
FUNCTION = "def f{i}(x, w, mesh):\n    h = x.to_local()\n    return DTensor.from_local(h @ w.to_local(), mesh, [Shard(0)])\n\n\n"


def program(*extra: str, functions: int = 6) -> bytes:
    return (HEADER + "".join(FUNCTION.format(i=i) for i in range(functions)) + "".join(extra)).encode()


@pytest.mark.parametrize("extra", [
    # a module-level exit another part's function meets: the shared site's evidence differs
    "G = Replicate_t.to_local()\n\ndef late(x):\n    return x @ G\n",
    # an import inside a function: every function analysed after it resolves names through it
    "def late(x):\n    import torch.distributed.tensor as T\n    return x\n",
    # a class inside a function: recorded in the file's classes
    "def late(x):\n    class Inner(torch.nn.Module):\n        pass\n    return x\n",
    # a name defined twice: which definition's summary stands depends on the order
    "def f0(x):\n    return x.to_local()\n",
])
def test_what_the_parts_cannot_stand_for_is_refused(every_def_lazy, extra):
    data = program(extra)
    assert split(data, "positions", 2) is None
    assert split(program(), "positions", 2) is not None  # (the same file without it merges)


def test_a_file_without_lazy_functions_is_analysed_by_part_zero(monkeypatch):
    monkeypatch.setattr(parse, "LAZY_FROM", 10**12)
    data = program()
    parts = [file_facts(data, "", (k, 3)) for k in range(3)]
    assert parts[1]["_part"] == {"unsplit": True} and not parts[1].get("sites")
    assert same(file_parts.merge(parts), file_facts(data, ""))


def test_parts_of_a_file_that_cannot_be_analysed_agree():
    """No trigger token, a syntax error: the parts' facts are the file's."""
    for data in (b"x = 1\n", b"import torch\ndef f(x:\n    return x.to_local()\n"):
        assert same(split(data, "", 2), file_facts(data, ""))


def test_a_crashed_part_is_the_files_error():
    from placement_lint.fact_store import crashed_facts

    parts = [file_facts(program(), "", (0, 2)), crashed_facts("signal 11: SIGSEGV")]
    assert file_parts.merge(parts)["error"]["message"].startswith("parser crashed")


def test_share_cuts_consecutive_blocks_by_size():
    lazy = {i: (f"f{i}", "x" * size) for i, size in enumerate([10, 10, 10, 10, 40, 20])}
    shares = [file_parts.share(lazy, (k, 3)) for k in range(3)]
    assert set().union(*shares) == set(lazy) and sum(map(len, shares)) == len(lazy)
    assert shares == [{0, 1, 2, 3}, {4}, {5}]  # a block goes to the part its first byte falls in
    assert file_parts.count(50 * 2**20, 1) == 1 and file_parts.count(2**20, 8) == 1
    assert file_parts.count(20 * 2**20, 4) == 4 and file_parts.count(3 * 2**20, 16) == 3


REAL_MERGE = file_parts.merge


def run_split(tmp_path, monkeypatch, files: dict[str, bytes], jobs: int):
    """The engine on `files`, big ones split (a part from 8 KB), with `jobs` processes; the
    report's rows, and the number of parts of each merge."""
    from placement_lint.config import load_config
    from placement_lint.engine import lint
    from placement_lint.findings import Confidence

    merges = []
    monkeypatch.setattr(file_parts, "merge", lambda parts: merges.append(len(parts)) or REAL_MERGE(parts))
    monkeypatch.setattr(file_parts, "SPLIT_FROM", 16_000)
    monkeypatch.setattr(file_parts, "PART_BYTES", 8_000)
    monkeypatch.setattr(parse, "LAZY_FROM", 0)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path)
    config.min_confidence = Confidence.LOW
    report = lint([tmp_path], config, use_cache=False, cwd=tmp_path, jobs=jobs)
    rows = sorted((f.path, f.line, f.column, f.code, f.message) for f in report.findings)
    return rows, merges


@pytest.mark.parametrize("fast", [True, False])
def test_the_engine_splits_big_files_and_reports_the_same(tmp_path, monkeypatch, fast):
    from placement_lint import cst_parse

    monkeypatch.setattr(cst_parse, "FAST", fast)  # (the pool's workers are forked: they inherit it)
    files = {"dense.py": hostile.dense(40_000).encode(), "refused.py": program("G = Replicate_t.to_local()\n\ndef late(x):\n    return x @ G\n", functions=200),
             "small.py": (REPO / "fixtures" / "tp_expert_matmul.py").read_bytes()}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    alone, merges_alone = run_split(tmp_path / "one", monkeypatch, files, jobs=1)
    pooled, merges = run_split(tmp_path / "two", monkeypatch, files, jobs=2)
    assert not merges_alone  # one process: nothing to split across
    assert merges and all(n == 2 for n in merges)
    # phase one (two files), then a positions phase only where the first pass could not position
    # as it went (LibCST's tree; the fast front end's comes with its positions)
    assert len(merges) == 2 if fast else len(merges) >= 3
    assert pooled == alone and len(alone) > 200
    assert {row[0] for row in alone} >= {"dense.py", "refused.py", "small.py"}  # refused: analysed whole


def test_a_parts_positions_pass_reuses_its_regions(every_def_lazy, monkeypatch):
    from placement_lint import regions

    calls = []
    real = regions.select_blocks
    monkeypatch.setattr(regions, "select_blocks", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = program()
    first = file_facts(data, "/skip-test-rank", (0, 2))
    positioned = file_facts(data, "positions/skip-test-rank", (1, 2))
    assert len(calls) == 1 and first["sites"] and positioned["sites"][0]["pos"]
    file_facts(data + b"\n", "positions/skip-test-rank", (1, 2))  # another text: selected again
    file_facts(data, "positions/skip-test-rank")  # not a part: never from the memo
    assert len(calls) == 3


def test_phase_one_joins_its_parts_results(tmp_path, monkeypatch):
    """fact_store.FactStore._joined: a part that could not read the file, parts that read different
    bytes, a crashed part, and parts the merge refuses (the file read again, analysed whole)."""
    from placement_lint.fact_store import CHANGED, FactStore, crashed_facts

    monkeypatch.setattr(parse, "LAZY_FROM", 0)
    store = FactStore(use_cache=False, cache_dir=None, jobs=1, manifest=False)
    path = tmp_path / "m.py"
    data = program("G = Replicate_t.to_local()\n\ndef late(x):\n    return x @ G\n")
    path.write_bytes(data)
    from placement_lint.cache import digest

    d = digest(data)
    parts = [(True, d, file_facts(data, "", (k, 2))) for k in range(2)]
    assert store._joined(str(path), [parts[0], ("Permission denied",)], "") == ("Permission denied",)
    assert store._joined(str(path), [parts[0], (True, "other", parts[1][2])], "") == (CHANGED,)
    crash = (True, "", crashed_facts("signal 9: SIGKILL"))
    assert store._joined(str(path), [parts[0], crash], "") is crash
    assert store._joined(str(path), [(False, d, None)] * 2, "") == (False, d, None)
    # refused (a module-level exit met in a function): read again and analysed in one piece
    candidate, shown, facts = store._joined(str(path), parts, "")
    assert candidate and shown == "" and same(facts, file_facts(data, ""))
    path.write_bytes(data + b"\n")  # ... unless it changed since the parts read it
    assert store._joined(str(path), parts, "") == (CHANGED,)
    path.unlink()
    assert "No such file" in store._joined(str(path), parts, "")[0]
