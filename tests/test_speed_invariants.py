"""The speed machinery (content-hash cache, process pool, phase two) must never change what is
reported: identical findings cold, warm, with 1 worker and with N workers; a warm run parses
nothing; a torn cache entry is recomputed; concurrent runs may share one cache directory.

Nothing here is timed: timings live in bench/run.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from placement_lint import engine, facts as facts_mod
from placement_lint.config import load_config
from placement_lint.findings import Confidence

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

# Files that make the tree exercise every path: a parse error (DTP000), undecodable bytes, a
# file with no trigger token, and a file that applies a project style by name only (phase two).
EXTRA = {
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


def run_lint(root: Path, monkeypatch, *, jobs: int | None, use_cache: bool, cache_dir: Path | None = None):
    monkeypatch.chdir(root)
    config = load_config(root)
    config.min_confidence = Confidence.LOW  # compare everything the engine produces
    return engine.lint([root], config, jobs=jobs, use_cache=use_cache, cache_dir=cache_dir, cwd=root)


def generated_tree(dest: Path) -> Path:
    """~40 files: the fixtures (harnesses aside) twice, the second copy shifted and varied so that
    its files hash differently, plus the EXTRA files."""
    dest.mkdir()
    for variant in (0, 1):
        out = dest / f"variant{variant}"
        for src in sorted(FIXTURES.rglob("*.py")):
            rel = src.relative_to(FIXTURES)
            if rel.parts[0] == "harnesses":
                continue
            if variant == 1 and rel.parts[0] in ("negatives", "moe_router_fixed"):
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


def all_modes(root: Path, tmp_path: Path, monkeypatch) -> dict[str, str]:
    cache = tmp_path / "cache"
    pool = PoolSpy(monkeypatch)
    out = {
        "cold jobs=1": canonical(run_lint(root, monkeypatch, jobs=1, use_cache=False)),
        "cold jobs=2": canonical(run_lint(root, monkeypatch, jobs=2, use_cache=False)),
        "cold auto jobs": canonical(run_lint(root, monkeypatch, jobs=None, use_cache=False)),
    }
    pools_cold = pool.created
    out["fill cache jobs=2"] = canonical(run_lint(root, monkeypatch, jobs=2, use_cache=True, cache_dir=cache))
    out["warm jobs=2"] = canonical(run_lint(root, monkeypatch, jobs=2, use_cache=True, cache_dir=cache))
    out["warm jobs=1"] = canonical(run_lint(root, monkeypatch, jobs=1, use_cache=True, cache_dir=cache))
    cache2 = tmp_path / "cache-jobs1"
    out["fill cache jobs=1"] = canonical(run_lint(root, monkeypatch, jobs=1, use_cache=True, cache_dir=cache2))
    out["warm (filled by jobs=1) jobs=2"] = canonical(run_lint(root, monkeypatch, jobs=2, use_cache=True, cache_dir=cache2))
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
    assert 35 <= n_files <= 60
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
                and not f["path"].startswith(("variant0/negatives", "variant0/moe_router_fixed")))
    v1 = sorted((f["path"].split("/", 1)[1], f["line"] - 2, f["code"]) for f in data["findings"] if f["path"].startswith("variant1/"))
    assert v0 == v1


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


@pytest.mark.parametrize("content", [b"{}", b"[]", b"\"x\""])
def test_wrong_shape_cache_entry_is_recomputed(gen_tree, tmp_path, monkeypatch, content):
    cache = tmp_path / "cache"
    ref = canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache))
    for e in cache.glob("*.json"):
        e.write_bytes(content)
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache)) == ref


@pytest.mark.parametrize("content", [b"{}", b"[]", b"\"x\"", b"null", b"{\"sites\": 3}"])
def test_wrong_shape_cache_entry_is_recomputed(gen_tree, tmp_path, monkeypatch, content):
    """Well-formed JSON of the wrong shape (edited, or written by another tool) is a miss, never
    trusted: '{}' would silently drop the file's findings, '[]' would crash the run."""
    cache = tmp_path / "cache"
    ref = canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache))
    for e in cache.glob("*.json"):
        e.write_bytes(content)
    assert canonical(run_lint(gen_tree, monkeypatch, jobs=1, use_cache=True, cache_dir=cache)) == ref
