"""Work the engine does early, on the worker pool, must change nothing in the report: a file that
has a finding on its own is positioned in phase one (fact_store.alone_has_findings), and phase two
b's first round runs on the pool while the parent looks for the files that name a leaky style
(fact_store.start_early_late). Each is checked to happen, and a pooled run against a one-process run."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from placement_lint import engine, fact_store, parallel
from placement_lint.config import load_config
from placement_lint.facts import SKIP_TEST_RANK, file_facts
from placement_lint.findings import Confidence

SLICE = textwrap.dedent("""
    import torch.distributed as dist

    def split(x, n):
        r = dist.get_rank()
        return x[r * n : (r + 1) * n]
""")

#: a bare to_local whose only consumer is a function of another module: b.py has no trigger token,
#: so the first pass never reads it, and phase two b analyses it whole to follow the call
CALLER = textwrap.dedent("""
    from torch.distributed.tensor import DTensor
    from pkg.b import take

    def forward(dt: DTensor, n):
        h = dt.to_local()
        return take(h, n)
""")
CALLEE = textwrap.dedent("""
    import torch.distributed as dist

    def take(h, n):
        out = h.new_empty(h.shape)
        dist.all_to_all_single(out, h)
        return out * n
""")
#: a bare to_local with nothing seen downstream: a low finding only
LOW_ONLY = textwrap.dedent("""
    import torch

    def f(dt):
        h = dt.to_local()
        return torch.relu(h)
""")


@pytest.mark.parametrize("source, mode, expected", [
    (SLICE, SKIP_TEST_RANK, True),  # a rank slice outside test code: medium
    (LOW_ONLY, SKIP_TEST_RANK, False),  # low only, and the run reports medium and up
    (LOW_ONLY, "", True),  # the run reports low too
    ("import torch\nx = 1\n", "", False),  # no site at all
])
def test_alone_has_findings(source, mode, expected):
    facts = file_facts(source.encode(), mode)
    assert fact_store.alone_has_findings("m.py", facts, mode) is expected


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text(CALLER)
    (root / "pkg" / "b.py").write_text(CALLEE)
    (root / "pkg" / "s.py").write_text(SLICE)
    for i in range(3):  # more files, so that the pool has something to share
        (root / "pkg" / f"low{i}.py").write_text(LOW_ONLY)
    return root


def _run(root: Path, monkeypatch, jobs: int, min_confidence: Confidence) -> dict:
    monkeypatch.chdir(root)
    config = load_config(root)
    config.min_confidence = min_confidence
    report = engine.lint([root], config, jobs=jobs, use_cache=False, cwd=root)
    data = report.to_json()
    data["stats"].pop("seconds")
    return data


@pytest.mark.parametrize("min_confidence", [Confidence.LOW, Confidence.MEDIUM])
def test_pooled_run_does_the_early_work_and_reports_the_same(tmp_path, monkeypatch, min_confidence):
    root = _tree(tmp_path / "tree")
    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 0)  # a small tree: make jobs=2 use the pool
    early: list = []
    started = fact_store.start_early_late

    def spy(*args):
        out = started(*args)
        early.append(None if out is None else [p for p, _, _ in out[0]])
        return out

    modes: list[str] = []
    facts_for = engine.FactStore.facts_for

    def record(self, items):
        modes.extend(m for _, _, m in items)
        return facts_for(self, items)

    monkeypatch.setattr(engine, "start_early_late", spy)
    monkeypatch.setattr(engine.FactStore, "facts_for", record)
    pooled = _run(root, monkeypatch, 2, min_confidence)
    assert early and early[0] == ["pkg/b.py"], early  # phase two b's first round, started early
    # the files with a finding of their own were positioned by the workers: phase three has
    # nothing left to position
    assert not any(m.startswith("positions") for m in modes), modes
    monkeypatch.setattr(engine, "start_early_late", started)
    serial = _run(root, monkeypatch, 1, min_confidence)
    assert json.dumps(pooled, sort_keys=True) == json.dumps(serial, sort_keys=True)
    found = {(f["path"], f["code"]) for f in serial["findings"]}
    assert ("pkg/s.py", "DTP201") in found, found
    if min_confidence == Confidence.LOW:
        assert ("pkg/a.py", "DTP101") in found, found


def test_no_pool_no_early_round(tmp_path, monkeypatch):
    root = _tree(tmp_path / "tree")
    calls: list = []
    started = fact_store.start_early_late
    monkeypatch.setattr(engine, "start_early_late", lambda *a: calls.append(started(*a)) or calls[-1])
    _run(root, monkeypatch, 1, Confidence.MEDIUM)
    assert calls == [None]  # in one process a thread would only contend for the interpreter
