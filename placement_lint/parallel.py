"""A process pool sized to the work: no pool for a handful of files (its start-up costs more
than it saves), otherwise one worker per core with files batched by size. One pool per run: it is
started by the first phase that needs it and reused by the later ones."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import sys
import tempfile
from typing import Any, Callable, Sequence

#: below this many bytes of source, one process is faster than starting a pool (applies to an
#: explicit --jobs N too: N is the most workers a run may use, not a demand for a pool). Phase one
#: weighs every file it must read, the later phases the candidates they analyse.
POOL_MIN_BYTES = 400_000


#: the most seconds one item (a file's analysis) may take before its worker is killed (in this
#: process: interrupted by a timer) and the item reported as too slow (`file-timeout` in the
#: configuration, or this variable; "0" or "off": no limit). Generous: analysis is linear in a
#: file's size (a 20 MB file dense with findings takes about 4 minutes in one process), so only a
#: pathological input reaches it
ITEM_TIMEOUT_ENV = "PLACEMENT_LINT_FILE_TIMEOUT"
DEFAULT_ITEM_TIMEOUT = 900.0
#: the configuration's `file-timeout` for the run under way (engine.lint sets it); None: not set
configured_timeout: float | None = None
#: how a too-slow item's reason starts (engine.crashed_facts words its DTP000 from it)
TIMED_OUT = "timed out"


def item_timeout() -> float | None:
    """Seconds an item may take (None: unbounded). Raises UsageError for an
    environment value that is not a number of seconds."""
    raw = os.environ.get(ITEM_TIMEOUT_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_ITEM_TIMEOUT if configured_timeout is None else (configured_timeout or None)
    if raw == "off":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        from placement_lint.errors import UsageError

        raise UsageError(f"{ITEM_TIMEOUT_ENV}={raw!r}: expected a number of seconds (0 or off: no limit)")
    return value or None


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

    def __init__(self, jobs: int | None, timeout: float | None = None):
        self.workers = default_jobs() if not jobs else jobs
        self.timeout = timeout  # seconds one item may take (None: no limit)
        self.timed_out: set[int] = set()  # item indices of this map whose worker was killed for time
        self._executor = None
        self._track: str | None = None  # the folder where workers record their current item
        self._size = 0
        self.started = 0  # pools started (0 or 1): for tests
        self.pooled_maps = 0  # `map` calls the pool ran: for tests

    def map(self, fn: Callable[[list], list], items: Sequence[tuple[str, bytes, Any]],
            on_crash: Callable[[Any, str], Any] | None = None) -> list:
        """`fn` over (path, bytes, mode) items, weighted by their bytes."""
        return self.map_weighted(fn, items, [len(item[1]) for item in items], on_crash=on_crash)

    @property
    def running(self) -> bool:
        """Whether the worker processes are started (a later map runs on them, even one item)."""
        return self._executor is not None

    def would_pool(self, weights: Sequence[int]) -> bool:
        """Whether `map_weighted` over items of these weights would run on the pool."""
        if self.workers <= 1 or not weights:
            return False
        if self._executor is not None:
            return True  # even one item: the workers have LibCST loaded, this process may not
        return len(weights) >= 2 and sum(weights) >= POOL_MIN_BYTES

    def map_weighted(self, fn: Callable[[list], list], items: Sequence[Any], weights: Sequence[int],
                     per_worker: int = 2, progress: Callable[[int, int], None] | None = None,
                     on_crash: Callable[[Any, str], Any] | None = None) -> list:
        """`fn` over `items` (a list in, a list of as many results out), on the pool when
        `would_pool(weights)`, else in this process; results in the items' order. The pool gets
        `per_worker` batches a worker, balanced by weight (more, smaller batches balance work
        whose cost the weights predict badly: idle workers take the next batch).

        A worker that dies (a native crash in LibCST, the OOM killer) breaks the pool: the items
        each worker was working on are rerun alone, one fresh process each, and an item that
        kills its process too gets `on_crash(item, reason)` as its result; the other unfinished
        items go to a fresh pool. Without `on_crash`, a crash raises WorkerCrash."""
        if not self.would_pool(weights):
            return self._in_process(fn, items, on_crash)
        results: list = [None] * len(items)
        todo = list(range(len(items)))
        done = 0
        self.timed_out = set()
        while todo:
            executor = self._executor or self._start(min(self.workers, len(todo)))
            lost = self._run(executor, fn, items, weights, todo, per_worker, results, progress, done)
            if not lost:
                break
            done += len(todo) - len(lost)
            # the pool is broken: the items in progress in its workers are the suspects
            suspects = self._in_progress() & set(lost)
            self._discard()
            for i in sorted(suspects or lost):  # (no suspect known: every lost item alone)
                if i in self.timed_out:  # (not run again: it would take as long)
                    results[i] = _crashed(on_crash, items[i], _slow(self.timeout))
                else:
                    results[i] = isolated(fn, items[i], on_crash, self.timeout)
                done += 1
                if progress is not None:
                    progress(done, len(items))
            todo = [i for i in lost if i not in suspects] if suspects else []
        self.pooled_maps += 1
        return results

    def _in_process(self, fn: Callable[[list], list], items: Sequence[Any],
                    on_crash: Callable[[Any, str], Any] | None) -> list:
        """`fn` over `items` in this process, each item bounded by the time limit where a timer
        signal can interrupt it: in the main thread, with no timer of the caller's running. (An
        item on the deep-stack thread, analysis/depth.py, is abandoned there, not stopped.)"""
        if not self.timeout or not _can_time():
            return fn(list(items))
        out = []
        for item in items:
            try:
                with _time_limit(self.timeout):
                    out.extend(fn([item]))
            except _TooSlow:
                out.append(_crashed(on_crash, item, _slow(self.timeout)))
        return out

    def _run(self, executor, fn, items, weights, todo, per_worker, results, progress, done) -> list[int]:
        """One pooled pass over the item indices `todo`; the indices whose results were lost to
        a broken pool (empty when none)."""
        from concurrent.futures.process import BrokenProcessPool

        n = self._size
        # balance batches by weight (largest first into the lightest batch), keep result order
        order = sorted(todo, key=lambda i: -weights[i])
        batches: list[list[int]] = [[] for _ in range(n * per_worker)]
        loads = [0] * len(batches)
        for i in order:
            j = loads.index(min(loads))
            batches[j].append(i)
            loads[j] += weights[i]
        batches = [b for b in batches if b]
        futures = {}
        lost: list[int] = []
        for b in batches:
            try:
                futures[executor.submit(_tracked, fn, [items[i] for i in b], b, self._track)] = b
            except BrokenProcessPool:
                lost.extend(b)
        for fut in self._completed(futures):
            b = futures[fut]
            try:
                batch = fut.result()
            except BrokenProcessPool:
                lost.extend(b)
                continue
            for i, r in zip(b, batch):
                results[i] = r
            done += len(b)
            if progress is not None:
                progress(done, len(items))
        return lost

    def _completed(self, futures):
        """as_completed(futures), and with a timeout, a check every second for a worker that has
        been on one item too long: it is killed (the pool breaks; map_weighted then reports that
        item as too slow and reruns the others)."""
        from concurrent.futures import FIRST_COMPLETED, as_completed, wait

        if not self.timeout or self._track is None:
            yield from as_completed(futures)
            return
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=min(1.0, self.timeout), return_when=FIRST_COMPLETED)
            yield from finished
            if pending:
                self._kill_overdue()

    def _kill_overdue(self) -> None:
        """Kill the workers whose current item started more than `timeout` seconds ago (a
        record's mtime is when its worker wrote the item's index, just before starting it)."""
        import time

        now = time.time()
        for pid, index, started in self._records():
            if now - started > self.timeout:
                self.timed_out.add(index)
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def _in_progress(self) -> set[int]:
        """The item indices the pool's workers had started and not finished (their records)."""
        return {index for _, index, _ in self._records()}

    def _records(self):
        """(worker pid, item index, when it started: the record's mtime) per worker busy on an
        item, from the records `_tracked` keeps (one file per worker, named by its pid)."""
        if self._track is None:
            return
        for name in os.listdir(self._track):
            path = os.path.join(self._track, name)
            try:
                started = os.stat(path).st_mtime
                with open(path, "rb") as fh:
                    index = int(fh.read().strip() or b"-1")
                pid = int(name)
            except (OSError, ValueError):
                continue
            if index >= 0:
                yield pid, index, started

    def _discard(self) -> None:
        """Drop a broken pool (its workers are gone); the next pass starts a fresh one."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._track is not None:
            shutil.rmtree(self._track, ignore_errors=True)
            self._track = None

    def _start(self, n: int):
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing

        # fork: workers inherit the imported analyzer (no re-import of __main__, cheapest start)
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self._track = tempfile.mkdtemp(prefix="placement-lint-pool-")  # each worker's current item
        self._executor = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
        self._size = n
        self.started += 1
        return self._executor

    def close(self) -> None:
        self._discard()


class WorkerCrash(RuntimeError):
    """A worker process died on an item and the caller gave no `on_crash`."""


def crash_reason(exitcode: int | None) -> str:
    """How a process ended, in words: "signal 11: SIGSEGV", "exit code 3"."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-exitcode}: {name}"
    return f"exit code {exitcode}"


class _TooSlow(BaseException):
    """An item ran past the time limit in this process (a BaseException: the analysis's own
    `except Exception` handlers must not take it for an error of the file)."""


def _can_time() -> bool:
    """Whether an item in this process can be bounded by a timer signal."""
    import threading

    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0)


@contextlib.contextmanager
def _time_limit(seconds: float):
    def expired(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _slow(seconds: float | None) -> str:
    """The crash reason of an item that took longer than `seconds`."""
    return f"{TIMED_OUT} after {seconds:g} s"


def _crashed(on_crash: Callable[[Any, str], Any] | None, item: Any, reason: str) -> Any:
    if on_crash is None:
        raise WorkerCrash(f"a worker process crashed ({reason})")
    return on_crash(item, reason)


def isolated(fn: Callable[[list], list], item: Any, on_crash: Callable[[Any, str], Any] | None,
             timeout: float | None = None) -> Any:
    """fn([item])[0] in a fresh process of its own: a crash there ends only that process, and
    so does taking longer than `timeout` seconds."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_isolated_main, args=(fn, item, send), daemon=True)
    proc.start()
    send.close()
    slow = False
    try:
        if timeout and not receive.poll(timeout):
            slow = True
            proc.kill()
            ok, value = None, None
        else:
            ok, value = receive.recv()
    except EOFError:  # it died before answering
        ok, value = None, None
    finally:
        receive.close()
        proc.join()
    if ok is None:
        return _crashed(on_crash, item, _slow(timeout) if slow else crash_reason(proc.exitcode))
    if not ok:
        raise value
    return value


def _isolated_main(fn: Callable[[list], list], item: Any, send) -> None:
    try:
        result = (True, fn([item])[0])
    except BaseException as exc:  # an ordinary error is the caller's, as it would be in the pool
        result = (False, exc)
    send.send(result)
    send.close()


#: per worker process: (records folder, descriptor of its record)
_RECORD: list = [None, None]


def _tracked(fn: Callable[[list], list], items: list, indices: list[int], track: str | None) -> list:
    """fn over a batch in a worker, one item at a time, each item's index recorded before it is
    worked on (a fixed-width overwrite of this worker's file: a few microseconds), so that the
    parent knows which item a worker that died was on.

    Workers are forked while engine.lint has CPython's cyclic collector paused, and keep it so:
    it would rescan a file's LibCST trees over and over as they are built (cold torch/ 10-15 %
    slower with it). What little cyclic garbage an analysis leaves is collected once a batch:
    the youngest generation only, which (nothing being promoted while paused) holds everything
    allocated since the last batch, and not the modules imported before the fork."""
    try:
        return _batch(fn, items, indices, track)
    finally:
        if not gc.isenabled():
            gc.collect(0)


def _batch(fn: Callable[[list], list], items: list, indices: list[int], track: str | None) -> list:
    if track is None:
        return fn(items)
    if _RECORD[0] != track:
        _RECORD[0] = track
        _RECORD[1] = os.open(os.path.join(track, str(os.getpid())), os.O_WRONLY | os.O_CREAT, 0o600)
    fd = _RECORD[1]
    out = []
    for index, item in zip(indices, items):
        os.pwrite(fd, b"%20d" % index, 0)
        out.extend(fn([item]))
    os.pwrite(fd, b"%20d" % -1, 0)
    return out
