"""A process pool sized to the work: no pool for a handful of files (its start-up costs more
than it saves), otherwise one worker per core with files batched by size."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

#: below this many bytes of candidate source, one process is faster than starting a pool
POOL_MIN_BYTES = 400_000


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def map_chunked(fn: Callable[[list], list], items: Sequence[tuple[str, bytes, Any]], jobs: int | None) -> list:
    total = sum(len(data) for _, data, _ in items)
    n = default_jobs() if not jobs else jobs
    if n <= 1 or len(items) < 2 or (jobs is None and total < POOL_MIN_BYTES):
        return fn(list(items))
    n = min(n, len(items))
    # balance batches by bytes (largest first into the lightest batch), keep result order
    order = sorted(range(len(items)), key=lambda i: -len(items[i][1]))
    batches: list[list[int]] = [[] for _ in range(n * 2)]
    weights = [0] * len(batches)
    for i in order:
        j = weights.index(min(weights))
        batches[j].append(i)
        weights[j] += len(items[i][1])
    batches = [b for b in batches if b]
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    # fork: workers inherit the imported analyzer (no re-import of __main__, cheapest start)
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    results: list = [None] * len(items)
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = [(b, pool.submit(fn, [items[i] for i in b])) for b in batches]
        for b, fut in futures:
            for i, r in zip(b, fut.result()):
                results[i] = r
    return results
