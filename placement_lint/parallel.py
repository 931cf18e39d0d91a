"""A process pool sized to the work: no pool for a handful of files (its start-up costs more
than it saves), otherwise one worker per core with files batched by size. One pool per run: it is
started by the first phase that needs it and reused by the later ones."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

#: below this many bytes of source, one process is faster than starting a pool (applies to an
#: explicit --jobs N too: N is the most workers a run may use, not a demand for a pool). Phase one
#: weighs every file it must read, the later phases the candidates they analyse.
POOL_MIN_BYTES = 400_000


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


class Pool:
    """The worker processes of one run, started on first need. `map` runs in this process when a
    pool would not pay: one worker allowed, fewer than two items, or (while no pool is running)
    less than POOL_MIN_BYTES of source. Once started, the pool serves every later phase, even one
    item: its start-up is paid already, and the parent then never imports the analyzer. (The
    engine's phase one hands the workers paths weighted by file size, `map_weighted`: the workers
    read and prefilter the files themselves.)"""

    def __init__(self, jobs: int | None):
        self.workers = default_jobs() if not jobs else jobs
        self._executor = None
        self._size = 0
        self.started = 0  # pools started (0 or 1): for tests
        self.pooled_maps = 0  # `map` calls the pool ran: for tests

    def map(self, fn: Callable[[list], list], items: Sequence[tuple[str, bytes, Any]]) -> list:
        """`fn` over (path, bytes, mode) items, weighted by their bytes."""
        return self.map_weighted(fn, items, [len(item[1]) for item in items])

    def would_pool(self, weights: Sequence[int]) -> bool:
        """Whether `map_weighted` over items of these weights would run on the pool."""
        if self.workers <= 1 or not weights:
            return False
        if self._executor is not None:
            return True  # even one item: the workers have LibCST loaded, this process may not
        return len(weights) >= 2 and sum(weights) >= POOL_MIN_BYTES

    def map_weighted(self, fn: Callable[[list], list], items: Sequence[Any], weights: Sequence[int],
                     per_worker: int = 2, progress: Callable[[int, int], None] | None = None) -> list:
        """`fn` over `items` (a list in, a list of as many results out), on the pool when
        `would_pool(weights)`, else in this process; results in the items' order. The pool gets
        `per_worker` batches a worker, balanced by weight (more, smaller batches balance work
        whose cost the weights predict badly: idle workers take the next batch)."""
        if not self.would_pool(weights):
            return fn(list(items))
        executor = self._executor or self._start(min(self.workers, len(items)))
        n = self._size
        # balance batches by weight (largest first into the lightest batch), keep result order
        order = sorted(range(len(items)), key=lambda i: -weights[i])
        batches: list[list[int]] = [[] for _ in range(n * per_worker)]
        loads = [0] * len(batches)
        for i in order:
            j = loads.index(min(loads))
            batches[j].append(i)
            loads[j] += weights[i]
        batches = [b for b in batches if b]
        results: list = [None] * len(items)
        from concurrent.futures import as_completed

        futures = {executor.submit(fn, [items[i] for i in b]): b for b in batches}
        done = 0
        for fut in as_completed(futures):
            b = futures[fut]
            for i, r in zip(b, fut.result()):
                results[i] = r
            done += len(b)
            if progress is not None:
                progress(done, len(items))
        self.pooled_maps += 1
        return results

    def _start(self, n: int):
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing

        # fork: workers inherit the imported analyzer (no re-import of __main__, cheapest start)
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self._executor = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
        self._size = n
        self.started += 1
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
