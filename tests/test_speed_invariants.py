"""The speed machinery (content-hash cache, process pool, phase two) must never change what is
reported: identical findings cold, warm, with 1 worker and with N workers; a warm run parses
nothing; a torn cache entry is recomputed; concurrent runs may share one cache directory.

Nothing here is timed: timings live in bench/run.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from placement_lint import engine, fact_store, facts as facts_mod
from placement_lint.config import load_config
from placement_lint.findings import Confidence

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

#: test code whose only trigger is a rank: its rank slices are low, so a run at the default
#: threshold does not select these functions (facts mode SKIP_TEST_RANK)
RANK_ONLY_TESTS = b"""import torch.distributed as dist


class TestRanks:
    def test_rows(self, x, n):
        r = dist.get_rank()
        return x[r * n:(r + 1) * n]

    def _test_narrow(self, x):
        return x.narrow(0, dist.get_rank(), 1)


def test_top_level(x):
    rank = dist.get_rank()
    return x[rank:rank + 1]
"""

# Files that make the tree exercise every path: a parse error (DTP000), undecodable bytes, a
# file with no trigger token, a file that applies a project style by name only (phase two), and
# rank-only test code (skipped at the default threshold).
EXTRA = {
    "test_ranks.py": RANK_ONLY_TESTS,
    "broken.py": b"def f(:\n    x.to_local()\n",
    "latin.py": b"x = '\xe9'  # to_local\n",
    "plain.py": b"import os\n\n\ndef g(a):\n    return [a[i] for i in range(3)]\n" * 20,
    "apply_by_name.py": (
        b"from moe_router.styles import NoParallel\n"
        b"from torch.distributed.tensor.parallel import parallelize_module\n\n\n"
        b"def shard(model, mesh):\n"
        b"    return parallelize_module(model, mesh, {\"router.gate\": NoParallel()})\n"
    ),
}


def canonical(report) -> str:
    data = report.to_json()
    data["stats"].pop("seconds")
    return json.dumps(data, sort_keys=True, indent=1)


def run_lint(root: Path, monkeypatch, *, jobs: int | None, use_cache: bool, cache_dir: Path | None = None,
             min_confidence: Confidence = Confidence.LOW):
    monkeypatch.chdir(root)
    config = load_config(root)
    config.min_confidence = min_confidence  # by default LOW: compare everything the engine produces
    return engine.lint([root], config, jobs=jobs, use_cache=use_cache, cache_dir=cache_dir, cwd=root)


def generated_tree(dest: Path) -> Path:
    """The fixtures (harnesses aside) twice, the second copy (without the recall zoo) shifted and
    varied so that its files hash differently, plus the EXTRA files."""
    dest.mkdir()
    for variant in (0, 1):
        out = dest / f"variant{variant}"
        for src in sorted(FIXTURES.rglob("*.py")):
            rel = src.relative_to(FIXTURES)
            if rel.parts[0] == "harnesses":
                continue
            if variant == 1 and rel.parts[0] in ("negatives", "moe_router_fixed", "recall"):
                continue
            text = src.read_text()
            if variant == 1:
                # shift every line (positions must follow) and change the bytes (new cache keys)
                text = "# generated variant 1\n# second header line\n" + text + "\n\ndef _extra_helper(v):\n    return v\n"
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    for name, data in EXTRA.items():
        (dest / name).write_bytes(data)
    # the style applied by name lives in variant0/moe_router; make that package importable by name
    shutil.copytree(dest / "variant0" / "moe_router", dest / "moe_router")
    return dest


@pytest.fixture
def gen_tree(tmp_path) -> Path:
    return generated_tree(tmp_path / "gen")


@pytest.fixture
def fixtures_copy(tmp_path) -> Path:
    dest = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


class PoolSpy:
    """Counts ProcessPoolExecutor creations (the engine imports the class at call time)."""

    def __init__(self, monkeypatch):
        self.created = 0
        spy = self
        real = concurrent.futures.ProcessPoolExecutor

        class Counting(real):  # type: ignore[misc, valid-type]
            def __init__(self, *a, **k):
                spy.created += 1
                super().__init__(*a, **k)

        monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Counting)


class FactsSpy:
    """Counts in-process calls of facts.file_facts (jobs=1 runs compute in this process)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = facts_mod.file_facts

        def counting(*args, **kwargs):  # whatever the signature (force=/mode) is
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(facts_mod, "file_facts", counting)


def all_modes(root: Path, tmp_path: Path, monkeypatch, min_confidence: Confidence = Confidence.LOW) -> dict[str, str]:
    cache = tmp_path / "cache"
    pool = PoolSpy(monkeypatch)
    # these trees are below POOL_MIN_BYTES, which an explicit --jobs respects too: lift it so that
    # jobs=2 really runs the pool
    from placement_lint import parallel

    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)

    def run(**kw) -> str:
        return canonical(run_lint(root, monkeypatch, min_confidence=min_confidence, **kw))

    out = {
        "cold jobs=1": run(jobs=1, use_cache=False),
        "cold jobs=2": run(jobs=2, use_cache=False),
        "cold auto jobs": run(jobs=None, use_cache=False),
    }
    pools_cold = pool.created
    out["fill cache jobs=2"] = run(jobs=2, use_cache=True, cache_dir=cache)
    out["warm jobs=2"] = run(jobs=2, use_cache=True, cache_dir=cache)
    out["warm jobs=1"] = run(jobs=1, use_cache=True, cache_dir=cache)
    cache2 = tmp_path / "cache-jobs1"
    out["fill cache jobs=1"] = run(jobs=1, use_cache=True, cache_dir=cache2)
    out["warm (filled by jobs=1) jobs=2"] = run(jobs=2, use_cache=True, cache_dir=cache2)
    assert pools_cold >= 1, "jobs=2 must actually start a worker pool on this tree"
    return out


def assert_all_equal(results: dict[str, str]) -> None:
    ref_name, ref = next(iter(results.items()))
    for name, got in results.items():
        assert got == ref, f"{name} differs from {ref_name}"


def test_fixtures_identical_across_cache_and_workers(fixtures_copy, tmp_path, monkeypatch):
    results = all_modes(fixtures_copy, tmp_path, monkeypatch)
    assert_all_equal(results)
    data = json.loads(results["cold jobs=1"])
    assert {f["code"] for f in data["findings"]} >= {"DTP101", "DTP102", "DTP201"}


def test_generated_tree_identical_across_cache_and_workers(gen_tree, tmp_path, monkeypatch):
    n_files = sum(1 for _ in gen_tree.rglob("*.py"))
    n_recall = sum(1 for _ in (FIXTURES / "recall").rglob("*.py"))  # copied once, in variant0
    assert 35 <= n_files - n_recall <= 90  # the fixtures (two variants) and the generated files
    results = all_modes(gen_tree, tmp_path, monkeypatch)
    assert_all_equal(results)
    data = json.loads(results["cold jobs=1"])
    codes = {(f["path"].split("/")[0], f["code"]) for f in data["findings"]}
    # both variants found, the parse error reported, phase two reached the by-name use
    assert ("variant0", "DTP101") in codes and ("variant1", "DTP101") in codes
    assert ("broken.py", "DTP000") in codes
    assert any(f["path"] == "apply_by_name.py" and f["code"] == "DTP102" for f in data["findings"])
    # the shifted variant reports the same findings two lines lower
    v0 = sorted((f["path"].split("/", 1)[1], f["line"], f["code"]) for f in data["findings"] if f["path"].startswith("variant0/")
                and not f["path"].startswith(("variant0/negatives", "variant0/moe_router_fixed", "variant0/recall")))
    v1 = sorted((f["path"].split("/", 1)[1], f["line"] - 2, f["code"]) for f in data["findings"] if f["path"].startswith("variant1/"))
    assert v0 == v1


def test_generated_tree_identical_across_cache_and_workers_at_default_threshold(gen_tree, tmp_path, monkeypatch):
    """The same at medium (the default), where the first and positions passes skip rank-only
    test functions; and what it reports is exactly the low run's medium-and-high findings."""
    results = all_modes(gen_tree, tmp_path, monkeypatch, min_confidence=Confidence.MEDIUM)
    assert_all_equal(results)
    low = json.loads(canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=False)))
    medium = json.loads(results["cold jobs=1"])
    assert medium["findings"] == [f for f in low["findings"] if f["confidence"] != "low"]
    assert any(f["path"] == "test_ranks.py" for f in low["findings"])


def test_warm_run_parses_nothing(gen_tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cold = run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache)
    assert any(cache.glob("*.json"))

    spy = FactsSpy(monkeypatch)
    pool = PoolSpy(monkeypatch)
    import libcst

    def no_parse(*a, **k):  # a warm run must not even reach the parser
        raise AssertionError("warm run parsed a file")

    monkeypatch.setattr(libcst, "parse_module", no_parse)
    for jobs in (1, 2):
        warm = run_lint(gen_tree, monkeypatch, jobs=jobs, use_cache=True, cache_dir=cache)
        assert canonical(warm) == canonical(cold)
    assert spy.calls == 0
    assert pool.created == 0  # nothing to compute: no pool either
    assert warm.files_parsed == cold.files_parsed > 0


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_torn_cache_entry_is_recomputed(gen_tree, tmp_path, monkeypatch, damage):
    cache = tmp_path / "cache"
    ref = canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=False))
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache)) == ref
    entries = sorted(cache.glob("*.json"))
    assert len(entries) >= 10
    torn = entries[::3]
    for e in torn:
        data = e.read_bytes()
        e.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"\x00\xff{\"sites\": ["}[damage])

    spy = FactsSpy(monkeypatch)
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache)) == ref
    assert spy.calls >= len(torn)  # recomputed (files with equal bytes share an entry: >=)
    for e in torn:  # and rewritten whole
        json.loads(e.read_bytes())
    # the next run is fully warm again
    spy.calls = 0
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=2, use_cache=True, cache_dir=cache)) == ref
    assert spy.calls == 0


def _cli_json(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "placement_lint", "--format", "json", "--min-confidence", "low", *args, "."],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _strip(out: bytes) -> str:
    data = json.loads(out)
    data["stats"].pop("seconds")
    return json.dumps(data, sort_keys=True)


def test_concurrent_runs_share_one_cache_dir(gen_tree, tmp_path):
    cache = tmp_path / "shared-cache"
    ref_proc = _cli_json(gen_tree, "--no-cache", "--jobs", "1")
    ref_out, ref_err = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 1, ref_err.decode()
    ref = _strip(ref_out)

    for round_ in range(2):  # round 0: both fill an empty cache; round 1: both read it
        procs = [_cli_json(gen_tree, "--cache-dir", str(cache), "--jobs", j) for j in ("2", "1", "2")]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 1, f"round {round_}: exit {p.returncode}: {err.decode()[-2000:]}"
            assert _strip(out) == ref, f"round {round_}: findings differ from the uncached run"
    assert not list(cache.glob("*.tmp")), "temporary files left behind"
    for e in cache.glob("*.json"):
        json.loads(e.read_bytes())


@pytest.mark.parametrize("content", [b"{}", b"[]", b"\"x\"", b"null", b"{\"sites\": 3}"])
def test_wrong_shape_cache_entry_is_recomputed(gen_tree, tmp_path, monkeypatch, content):
    """Well-formed JSON of the wrong shape (edited, or written by another tool) is a miss, never
    trusted: '{}' would silently drop the file's findings, '[]' would crash the run."""
    cache = tmp_path / "cache"
    ref = canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache))
    for e in cache.glob("*.json"):
        e.write_bytes(content)
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache)) == ref


# -- rank-only test code at the default threshold (facts mode SKIP_TEST_RANK) ----------------------


class ParseSpy:
    """The texts handed to the parser (the fast front end, else LibCST) in this process (jobs=1)."""

    def __init__(self, monkeypatch):
        from placement_lint import cst_parse

        self.texts: list[str] = []
        real = cst_parse.parse_module

        def spying(source, *a, **k):
            self.texts.append(source)
            return real(source, *a, **k)

        monkeypatch.setattr(cst_parse, "parse_module", spying)

    def parsed(self, needle: str) -> bool:
        return any(needle in t for t in self.texts)


def _findings(report) -> list[tuple[str, int, str, str]]:
    return [(f.path, f.line, f.code, str(f.confidence)) for f in report.findings]


def test_rank_only_test_code_is_not_parsed_at_default_threshold(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "test_ranks.py").write_bytes(RANK_ONLY_TESTS)
    spy = ParseSpy(monkeypatch)
    medium = run_lint(root, monkeypatch, jobs=1, use_cache=False, min_confidence=Confidence.MEDIUM)
    assert medium.findings == [] and medium.files_parsed == 1  # its imports are still parsed
    assert spy.texts and not spy.parsed("def test_") and not spy.parsed("def _test_")

    spy.texts.clear()
    low = run_lint(root, monkeypatch, jobs=1, use_cache=False)
    assert spy.parsed("def test_rows") and spy.parsed("def _test_narrow") and spy.parsed("def test_top_level")
    assert _findings(low) == [
        ("test_ranks.py", 7, "DTP201", "low"),
        ("test_ranks.py", 10, "DTP201", "low"),
        ("test_ranks.py", 15, "DTP201", "low"),
    ]


@pytest.mark.parametrize("fast", [True, False])
def test_cache_never_serves_skipped_facts_to_a_low_run_or_back(tmp_path, monkeypatch, fast):
    from placement_lint import cst_parse

    monkeypatch.setattr(cst_parse, "FAST", fast)
    root = tmp_path / "proj"
    root.mkdir()
    (root / "test_ranks.py").write_bytes(RANK_ONLY_TESTS)
    cache = tmp_path / "cache"
    spy = ParseSpy(monkeypatch)

    def run(conf: Confidence):
        spy.texts.clear()
        return run_lint(root, monkeypatch, jobs=1, use_cache=True, cache_dir=cache, min_confidence=conf)

    assert run(Confidence.MEDIUM).findings == []  # fills the skip-mode entry
    low = run(Confidence.LOW)  # must not take it: parses the test functions and reports them
    assert spy.parsed("def test_rows") and len(low.findings) == 3
    assert run(Confidence.MEDIUM).findings == [] and spy.texts == []  # warm, its own entry
    assert _findings(run(Confidence.LOW)) == _findings(low) and spy.texts == []  # warm too
    # one entry per mode for the same bytes: the low run's first pass, and its positions pass where
    # the first one could not position its findings as it went (LibCST's tree; the fast front end's
    # comes with positions), the medium run's first pass (it has no finding, so no positions pass)
    modes = sorted(json.loads(e.read_bytes())["mode"] for e in cache.glob("*.json"))
    assert modes == ["", facts_mod.SKIP_TEST_RANK] + ([] if fast else ["positions"])


def test_facts_modes():
    skipped = facts_mod.file_facts(RANK_ONLY_TESTS, facts_mod.SKIP_TEST_RANK)
    full = facts_mod.file_facts(RANK_ONLY_TESTS, "")
    assert skipped["mode"] == facts_mod.SKIP_TEST_RANK and skipped["sites"] == []
    assert [s["kind"] for s in full["sites"]] == ["rank_slice"] * 3
    assert facts_mod.file_facts(RANK_ONLY_TESTS, "positions" + facts_mod.SKIP_TEST_RANK)["sites"] == []
    assert facts_mod.base_mode("positions" + facts_mod.SKIP_TEST_RANK) == "positions"
    with pytest.raises(ValueError):
        facts_mod.file_facts(RANK_ONLY_TESTS, "full" + facts_mod.SKIP_TEST_RANK)


def test_test_function_prefixes_are_the_rules_test_code(tmp_path, monkeypatch):
    """api.TEST_FUNCTION_PREFIXES must name exactly what DTP201 demotes to low as test code
    (the skip relies on it): a slice in a function so named is low, in any other medium."""
    from placement_lint.api import TEST_FUNCTION_PREFIXES

    names = [p + "x" for p in TEST_FUNCTION_PREFIXES] + ["check_x", "x_test_", "mytest_x", "testx", "Test_x"]
    root = tmp_path / "proj"
    root.mkdir()
    body = "".join(f"\n\ndef {n}(h, k):\n    r = dist.get_rank()\n    return h[r * k:(r + 1) * k]\n" for n in names)
    (root / "prefixes.py").write_text("import torch.distributed as dist\n" + body)
    report = run_lint(root, monkeypatch, jobs=1, use_cache=False)
    got = {f.symbol: str(f.confidence) for f in report.findings}
    assert got == {n: ("low" if n.startswith(TEST_FUNCTION_PREFIXES) else "medium") for n in names}
    assert list(got.values()).count("low") == len(TEST_FUNCTION_PREFIXES)


#: test functions that must NOT be skipped: each holds, or changes elsewhere, a finding at medium
#: or high (a skip that only checked the name would get every one of them wrong; checked below)
HAZARDS = {
    # a test method slicing an nn.Parameter attribute: high, even in test code
    "h_param_attr.py": """
        import torch
        import torch.distributed as dist
        from torch import nn


        class TestShard(nn.Module):
            def __init__(self, n):
                super().__init__()
                self.weight = nn.Parameter(torch.randn(4 * n, 8))

            def test_slice(self, n):
                r = dist.get_rank()
                return self.weight[r * n:(r + 1) * n]
        """,
    # a module-level Parameter sliced in a test function
    "h_param_global.py": """
        import torch
        import torch.distributed as dist
        from torch import nn

        W = nn.Parameter(torch.randn(16, 8))


        def test_slice(n):
            r = dist.get_rank()
            return W[r * n:(r + 1) * n]
        """,
    # a nested def: its symbol (test_outer.inner) is not test code
    "h_nested.py": """
        import torch.distributed as dist


        def test_outer(x, n):
            def inner(h):
                r = dist.get_rank()
                return h[r * n:(r + 1) * n]

            return inner(x)
        """,
    # a top-level function's decorator is evaluated in the module scope
    "h_decorator.py": """
        import torch.distributed as dist

        X = make_tensor()


        @register(X[dist.get_rank() * 4:])
        def test_decorated(n):
            r = dist.get_rank()
            return n[r:r + 1]
        """,
    # a class attribute set in a test method, read by a later method
    "h_selfattr.py": """
        import torch.distributed as dist
        from torch import nn


        class Block(nn.Module):
            def test_setup(self, x):
                self.r = dist.get_rank()
                return x[self.r:self.r + 1]

            def forward(self, h, n):
                return h[self.r * n:(self.r + 1) * n]
        """,
    # from_local(..., [Shard]) of a module-level rank slice: that slice is a manual distribute
    "h_from_local.py": """
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor, Shard

        r = dist.get_rank()
        PART = compute()[r * 4:(r + 1) * 4]


        def test_rewrap(mesh, x):
            w = DTensor.from_local(PART, mesh, [Shard(0)])
            return x[r:r + 1]
        """,
    # a syntax error in the test: the file's DTP000
    "h_syntax.py": """
        import torch.distributed as dist


        class TestBroken:
            def test_broken(self, x):
                r = dist.get_rank()
                return x[r:r + 1] +
        """,
}


def _hazard_tree(tmp_path: Path) -> Path:
    import textwrap

    root = tmp_path / "hazards"
    root.mkdir()
    for name, src in HAZARDS.items():
        (root / name).write_text(textwrap.dedent(src).lstrip())
    (root / "test_ranks.py").write_bytes(RANK_ONLY_TESTS)
    return root


def test_skip_keeps_every_finding_at_default_threshold(tmp_path, monkeypatch):
    root = _hazard_tree(tmp_path)
    low = run_lint(root, monkeypatch, jobs=1, use_cache=False)
    medium = run_lint(root, monkeypatch, jobs=1, use_cache=False, min_confidence=Confidence.MEDIUM)
    assert _findings(medium) == [f for f in _findings(low) if f[3] != "low"]
    # every hazard but from_local (which suppresses a finding) has its medium-or-high finding
    assert {f[0] for f in _findings(medium)} == set(HAZARDS) - {"h_from_local.py"}


def test_hazards_are_real(tmp_path, monkeypatch):
    """Skipping every test function by name alone would change each hazard's findings: each
    condition of skippable_tests.skippable_test is needed."""
    from placement_lint import regions, skippable_tests

    root = _hazard_tree(tmp_path)
    ref = _findings(run_lint(root, monkeypatch, jobs=1, use_cache=False, min_confidence=Confidence.MEDIUM))

    def by_name_only(lines, s, e, text, skip, param_attrs, method):
        header = next((i for i in range(s, e) if skippable_tests._DEF.match(lines[i].lstrip())), -1)
        return header >= 0 and bool(skippable_tests._TEST_DEF.match(lines[header].lstrip()))

    monkeypatch.setattr(regions, "skippable_test", by_name_only)
    monkeypatch.setattr(regions, "parses", lambda lines, ranges: True)
    naive = _findings(run_lint(root, monkeypatch, jobs=1, use_cache=False, min_confidence=Confidence.MEDIUM))
    changed = {f[0] for f in set(ref) ^ set(naive)}
    assert changed == set(HAZARDS)


def test_class_left_with_skipped_tests_only_still_parses_in_blocks():
    """A class whose every method is skipped keeps a `pass` (no fallback to a full parse, the
    class stays in the project index) and no line moves."""
    from placement_lint.regions import select_blocks

    blocks = select_blocks(RANK_ONLY_TESTS.decode(), skip_test_rank=True)
    texts = {start: text for start, text, _ in blocks}
    assert texts[4].split("\n")[:3] == ["class TestRanks:", "    pass", ""]
    import libcst

    for _, text, _ in blocks:
        libcst.parse_module(text)
    facts = facts_mod.file_facts(RANK_ONLY_TESTS, facts_mod.SKIP_TEST_RANK)
    assert [c["name"] for c in facts["classes"]] == ["TestRanks"]


# -- one worker pool per run ---------------------------------------------------------------------


class PoolRecorder:
    """The parallel.Pool objects a run creates (the engine imports the class at call time)."""

    def __init__(self, monkeypatch):
        from placement_lint import parallel

        self.pools: list = []
        recorder = self
        real = parallel.Pool

        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                recorder.pools.append(self)

        monkeypatch.setattr(parallel, "Pool", Recording)


def test_one_pool_serves_every_phase(gen_tree, monkeypatch):
    from placement_lint import parallel

    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)
    executors = PoolSpy(monkeypatch)
    pools = PoolRecorder(monkeypatch)
    spy = FactsSpy(monkeypatch)
    pooled = run_lint(gen_tree, monkeypatch, jobs=2, use_cache=False)
    assert len(pools.pools) == 1
    # phase one (which also positions the files with a finding of their own), the full pass of the
    # by-name style users and two b: one pool, which also takes a phase of a single file (the
    # parent never imports the analyzer)
    assert pools.pools[0].pooled_maps >= 2
    assert spy.calls == 0
    assert executors.created == pools.pools[0].started == 1
    assert pools.pools[0]._executor is None  # closed when the run ends
    assert canonical(pooled) == canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=False))


@pytest.mark.parametrize("jobs", [2, None])
def test_small_tree_runs_in_process_even_with_explicit_jobs(fixtures_copy, monkeypatch, jobs):
    """--jobs N is a maximum: below POOL_MIN_BYTES of candidate source no pool starts."""
    executors = PoolSpy(monkeypatch)
    report = run_lint(fixtures_copy, monkeypatch, jobs=jobs, use_cache=False)
    assert executors.created == 0
    assert canonical(report) == canonical(run_lint(fixtures_copy, monkeypatch, jobs=1, use_cache=False))


# -- phase one in the workers (the parent hands them paths, not bytes) ----------------------------


def _deny_reads(monkeypatch, *names: str) -> None:
    """Files whose stat works but whose read fails (as root, chmod 000 would not stop a read).
    The forked workers inherit the patch."""
    real = fact_store.read_bytes

    def read_bytes(path):
        if Path(path).name in names:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(fact_store, "read_bytes", read_bytes)


@pytest.mark.parametrize("min_confidence", [Confidence.LOW, Confidence.MEDIUM])
def test_unreadable_files_report_the_same_errors_from_the_workers(gen_tree, monkeypatch, min_confidence):
    """Files the workers cannot read give the errors, in the order, of a run that reads in process."""
    from placement_lint import parallel

    (gen_tree / "a_locked.py").write_bytes(b"y = x.to_local()\n")
    (gen_tree / "variant0" / "m_locked.py").write_bytes(b"import os\n")
    (gen_tree / "zz_locked.py").write_bytes(b"import torch.distributed as dist\nr = dist.get_rank()\n")
    _deny_reads(monkeypatch, "a_locked.py", "m_locked.py", "zz_locked.py")
    serial = run_lint(gen_tree, monkeypatch, jobs=1, use_cache=False, min_confidence=min_confidence)
    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)
    pools = PoolRecorder(monkeypatch)
    pooled = run_lint(gen_tree, monkeypatch, jobs=2, use_cache=False, min_confidence=min_confidence)
    assert pools.pools[0].started == 1 and pools.pools[0].pooled_maps >= 1  # phase one ran on the pool
    assert [e["path"] for e in pooled.errors] == ["a_locked.py", "variant0/m_locked.py", "zz_locked.py"]
    assert {e["message"] for e in pooled.errors} == {"cannot read file: Permission denied"}
    assert canonical(pooled) == canonical(serial)


class SourceRecorder:
    """The engine.Source objects a run creates."""

    def __init__(self, monkeypatch):
        self.sources: list = []
        recorder = self

        class Recording(engine.Source):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                recorder.sources.append(self)

        monkeypatch.setattr(engine, "Source", Recording)

    def held(self) -> list[str]:
        return sorted(s.path.name for s in self.sources if s.data is not None)


def test_pooled_first_pass_leaves_the_bytes_in_the_workers(gen_tree, monkeypatch):
    """With the pool, the parent holds the bytes only of the files that phases two and three
    analyse in process, never of the tree; in process (jobs=1, a small run) it keeps what it read."""
    from placement_lint import parallel

    n_files = sum(1 for _ in gen_tree.rglob("*.py"))
    serial = SourceRecorder(monkeypatch)
    ref = canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=False))
    assert len(serial.held()) == n_files
    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)
    pooled = SourceRecorder(monkeypatch)
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=2, use_cache=False)) == ref
    assert len(pooled.sources) == n_files
    # only the files of phases two and three (by-name style users, files with findings) are read
    # into the parent, to be sent out as bytes; not a file the prefilter skips, nor a candidate
    # without findings
    held = pooled.held()
    assert 0 < len(held) < n_files
    assert "plain.py" not in held and "broken.py" not in held and "latin.py" not in held


@pytest.mark.parametrize("min_confidence", [Confidence.LOW, Confidence.MEDIUM])
def test_pooled_cold_run_fills_cache_and_manifest_for_warm_and_partly_warm_runs(gen_tree, tmp_path, monkeypatch,
                                                                                 min_confidence):
    """A cold run whose workers read the files records every file in the stat manifest and every
    candidate in the cache: the next run reads and computes nothing. After two edits, a pooled
    run reads only those two, serves the rest from the cache, and reports what a cold run does."""
    from placement_lint import parallel

    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)
    cache = tmp_path / "cache"
    kw = {"use_cache": True, "cache_dir": cache, "min_confidence": min_confidence}
    pools = PoolRecorder(monkeypatch)
    cold = canonical(run_lint(gen_tree, monkeypatch, jobs=2, **kw))
    assert pools.pools[-1].started == 1
    assert cold == canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=False, min_confidence=min_confidence))

    reads: list[str] = []
    real = fact_store.read_bytes
    monkeypatch.setattr(fact_store, "read_bytes", lambda p: reads.append(Path(p).name) or real(p))
    spy = FactsSpy(monkeypatch)
    executors = PoolSpy(monkeypatch)
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=2, **kw)) == cold
    # (the files the prefilter skips but phase two or two b analysed in full keep their digest
    # in the manifest: the cache then serves their facts without a read)
    assert reads == [] and spy.calls == 0 and executors.created == 0

    # two edits: a finding fixed in one candidate, a token added to a formerly skipped file
    bug = gen_tree / "variant1" / "to_local_grad_placements" / "bad.py"
    if not bug.exists():
        bug = next(p for p in sorted((gen_tree / "variant1").rglob("*.py")) if b"to_local()" in p.read_bytes())
    bug.write_bytes(bug.read_bytes() + b"\n\ndef _late(x):\n    return x.to_local()\n")
    plain = gen_tree / "plain.py"
    plain.write_bytes(plain.read_bytes() + b"\n\ndef _local(x):\n    return x.to_local()\n")
    for p in (bug, plain):
        os.utime(p, ns=(1, 1))
    partly = canonical(run_lint(gen_tree, monkeypatch, jobs=2, **kw))
    fresh = canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=False, min_confidence=min_confidence))
    assert partly == fresh != cold
    assert executors.created >= 1  # the two edited files were read by the pool's workers


def test_full_mode_parsed_in_pieces_positions_like_the_whole_module():
    """Facts mode "full" parses each top-level statement on its own and positions only the
    blocks (and methods) holding a site: every site's position, evidence line and argument
    position must equal those of one parse of the whole module."""
    import libcst as cst

    from placement_lint.analyzer import analyze_blocks
    from placement_lint.facts import file_facts

    def key(facts):
        return [(s["kind"], s.get("pos"), s.get("meets_lines"), s.get("escapes_lines"), s.get("at")) for s in facts["sites"]]

    checked = 0
    for path in sorted(FIXTURES.rglob("*.py")):
        data = path.read_bytes()
        pieces = file_facts(data, "full")
        whole = analyze_blocks([(1, cst.parse_module(data.decode()), None)], positions="all")
        assert key(pieces) == key(whole), path
        checked += bool(pieces["sites"])
    assert checked >= 40


# -- phase two guessed by the workers -------------------------------------------------------------

_STYLE_HOME = """\
from torch.distributed.tensor.parallel import ParallelStyle, parallelize_module


class KeepLocal(ParallelStyle):
    def _apply(self, module, mesh):
        module.register_forward_hook(lambda m, i, out: self._out(out))
        return module

    def _out(self, out):
        return out.to_local()


def plan(model, mesh):
    parallelize_module(model, mesh, {"router.gate": KeepLocal()})
"""

# a RowwiseParallel input arrives Shard by default: a bare to_local() in its input hook is right,
# so the index finds no leaky style here although the file looks like a style's home
_ROWWISE_HOME = """\
from torch.distributed.tensor.parallel import RowwiseParallel


class ShardIn(RowwiseParallel):
    @staticmethod
    def _prepare_input_fn(input_layouts, desired_input_layouts, mod, inputs, device_mesh):
        return inputs[0].to_local()


def rank_part(x, mesh):
    rank = mesh.get_local_rank()
    return x[rank * 2 : rank * 2 + 2]
"""


def test_workers_analyse_a_style_home_in_full_and_the_parent_undoes_a_wrong_guess(tmp_path, monkeypatch):
    """A worker that meets a file defining a torch style whose hook returns a bare local tensor
    analyses it in full at once (phase two would); where the index disagrees (a RowwiseParallel
    input hook: Shard is the right label), the parent restores the first-pass facts. Either way the
    report is the serial run's, and the parent computes no facts of the guessed home."""
    from placement_lint import parallel

    root = tmp_path / "proj"
    root.mkdir()
    (root / "home.py").write_text(_STYLE_HOME)
    (root / "rowwise.py").write_text(_ROWWISE_HOME)
    (root / "user.py").write_text("from home import KeepLocal\n\nSTYLE = KeepLocal()\n")
    for min_confidence in (Confidence.LOW, Confidence.MEDIUM):
        serial = canonical(run_lint(root, monkeypatch, jobs=1, use_cache=False, min_confidence=min_confidence))
        monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)
        asked: list[tuple[str, str]] = []
        real = engine.FactStore.facts_for

        def recording(self, items):
            asked.extend((Path(p).name, mode) for p, _, mode in items)
            return real(self, items)

        monkeypatch.setattr(engine.FactStore, "facts_for", recording)
        pooled = canonical(run_lint(root, monkeypatch, jobs=2, use_cache=False, min_confidence=min_confidence))
        monkeypatch.undo()
        assert pooled == serial
        assert "DTP102" in serial and "home.py" in serial
        first = "/skip-test-rank" if min_confidence >= Confidence.MEDIUM else ""
        # the guessed home: no second full pass; the wrong guess: its first-pass facts back
        assert ("home.py", "full") not in asked
        assert ("rowwise.py", first) in asked
        assert ("user.py", "full") in asked
