"""Facts per file, got as cheaply as the run allows: the content-hash cache, the worker pool
(phase one hands the workers paths: they read, prefilter and analyse, and do early what needs no
other file), and a file's bytes read again only when a later phase needs them (`Source`).
Used by engine.lint, which orders the phases."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from placement_lint.findings import Confidence


def read_bytes(path: Path) -> bytes:
    """A source file's bytes: regular files only, at most source_text.max_file_size() bytes.
    Raises source_text.Unreadable (or OSError) with the reason."""
    from placement_lint.source_text import read_source

    return read_source(path)


def _reason(exc: BaseException) -> str:
    """Why a file was not read: an Unreadable's reason, an OSError's (a symlink loop said so)."""
    from placement_lint.source_text import os_reason

    return os_reason(exc) if isinstance(exc, OSError) else str(exc)


def compute_facts(items: Sequence[tuple]) -> list[dict[str, Any]]:
    """Facts for (path, bytes, mode) items, or (path, bytes, mode, part) for a part of a file
    split across the pool (file_parts.py). Top level so a process pool can run it."""
    from placement_lint.facts import file_facts

    return [file_facts(data, mode, *part) for _, data, mode, *part in items]


def crashed_facts(reason: str) -> dict[str, Any]:
    """The facts of a file whose analysis killed the process analysing it (a native crash: the
    depth guard keeps LibCST from what is known to crash it), alone in a fresh process too, or
    took longer than the per-file time limit (its worker was killed)."""
    from placement_lint.facts import EMPTY
    from placement_lint.parallel import TIMED_OUT

    if reason.startswith(TIMED_OUT):
        message = (f"analysis {reason} (the per-file time limit: file-timeout in the configuration, "
                   f"or PLACEMENT_LINT_FILE_TIMEOUT); not analysed")
    else:
        message = f"parser crashed ({reason}): the process analysing this file died, twice; not analysed"
    return {**EMPTY, "parsed": True, "crashed": True, "error": {"line": 1, "column": 1, "message": message}}


def _crashed(item: Any, reason: str) -> dict[str, Any]:
    """The facts of a pool item whose process died (parallel.Pool's on_crash)."""
    return crashed_facts(reason)


#: why a file that changed between two reads of one run is not reported
CHANGED = "its content changed while placement-lint ran; run again"


def read_error(shown: str, exc: BaseException | str) -> dict[str, Any]:
    """The error of a file that could not be stat'ed or read (`exc`, or its reason from a worker)."""
    reason = exc if isinstance(exc, str) else _reason(exc)
    return {"path": shown, "message": f"cannot read file: {reason}"}


def scan_files(items: Sequence[tuple], mode: str, cache) -> list[tuple]:
    """Phase one for files the parent has not read, in a worker: per (path, size) item, read the
    file, prefilter it and, for a candidate, get its facts in `mode` (through `cache`, a
    cache.FactsCache or None). Per item: (reason,) when unreadable, else (is_candidate, digest,
    facts): digest "" unless a candidate and `cache` is given, facts None unless a candidate.
    A (path, size, (k, n)) item is part k of n of a big file (file_parts.py): its digest is
    always given (the parent checks that every part read the same bytes) and its facts are the
    part's, never cached (the parent caches the merged facts). Top level so a process pool can run
    it; the bytes stay in the worker."""
    from placement_lint import prefilter
    from placement_lint.source_text import Unreadable, decodable

    out: list[tuple] = []
    for path, _, *part in items:
        try:
            data = read_bytes(Path(path))
        except (OSError, Unreadable) as exc:
            out.append((_reason(exc),))
            continue
        if not prefilter.might_match(data) and decodable(data):  # an undecodable file is reported (DTP000)
            out.append((False, "", None))
            continue
        digest = ""
        if cache is not None or part:
            from placement_lint.cache import digest as content_digest

            digest = content_digest(data)
        cached = cache.get(digest, mode) if cache is not None else None
        if part:
            from placement_lint.file_parts import unsplit

            if cached is not None:  # part 0 carries the whole file's facts, the others say so
                out.append((True, digest, cached if part[0][0] == 0 else unsplit()))
            else:
                from placement_lint.facts import file_facts

                out.append((True, digest, file_facts(data, mode, part[0])))
            continue
        facts = cached or _computed(data, digest, mode, cache)
        if cached is None:
            if may_define_leaky_style(facts):
                # phase two will analyse this file in full (it defines a style whose hook leaves
                # DTensor, and so names it): do it now, in parallel, instead of serially later;
                # the parent restores the first-pass facts if its index disagrees
                facts = _computed(data, digest, "full", cache)
            elif not facts.get("positioned") and alone_has_findings(path, facts, mode):
                # phase three would position this file (it has a finding on its own): do it now,
                # in parallel, rather than serially after the index is built
                facts = (cache.get(digest, "positions" + mode) if cache is not None else None) or \
                    _computed(data, digest, "positions" + mode, cache)
        out.append((True, digest, facts))
    return out


def _computed(data: bytes, digest: str, mode: str, cache) -> dict[str, Any]:
    """A file's facts in `mode`, computed, and stored in `cache` (if any) under its digest."""
    from placement_lint.facts import file_facts

    facts = file_facts(data, mode)
    if cache is not None:
        cache.put(digest, mode, facts)
    return facts


def may_define_leaky_style(facts: dict[str, Any]) -> bool:
    """Whether a file's first-pass facts hold a torch ParallelStyle subclass whose hook returns a
    bare local tensor: an over-approximation of ProjectIndex.leaky_styles() within one file (it
    ignores the input layout a torch base implies, and styles deriving through project bases)."""
    sites = facts.get("sites", ())
    for c in facts.get("classes", ()):
        if c.get("torch_style"):
            for i in c.get("bare_exits", ()):
                site = sites[i]
                if not site.get("guard") and "returned" in site.get("escapes", ()):
                    return True
    return False


def alone_has_findings(path: str, facts: dict[str, Any], mode: str) -> bool:
    """Whether the rules report a file's first-pass facts, the file seen alone (no reference
    resolved), at the threshold its facts mode implies (medium with SKIP_TEST_RANK, else low).
    A guess, for work done early: the run's own rules decide, on the whole project's index."""
    from placement_lint.facts import SKIP_TEST_RANK
    from placement_lint.index import ProjectIndex
    from placement_lint.resolution import NoResolver
    from placement_lint.rule import FileContext, all_rules

    if facts.get("error") or not facts.get("sites"):
        return False
    least = Confidence.MEDIUM if mode.endswith(SKIP_TEST_RANK) else Confidence.LOW
    ctx = FileContext(path=path, facts=facts, index=ProjectIndex({path: facts}, {path: path}, NoResolver()))
    return any(f.confidence >= least for rule in all_rules() if rule.CODE != "DTP000" for f in rule().check(ctx))


class Source:
    """A file's bytes, read only when needed (a warm run knows unchanged files by their stat)."""

    __slots__ = ("path", "data", "digest", "used")

    def __init__(self, path: Path, data: bytes | None = None, digest: str = ""):
        self.path, self.data, self.digest = path, data, digest
        self.used = False  # facts of this file were served in this run (FactStore.facts_for)

    def bytes(self) -> bytes:
        """The file's bytes, read if not held. Read after facts were served for its digest (a
        later phase: positions, whole-file), it must still be the file the digest names, else
        Unreadable: the engine reports it and drops the file rather than mix facts of two
        contents. Before that, a digest the bytes contradict (the stat manifest's, for a file
        changed behind an unchanged stat) is replaced by the bytes' own."""
        if self.data is None:
            data = read_bytes(self.path)
            if self.digest:
                from placement_lint.cache import digest

                actual = digest(data)
                if actual != self.digest:
                    if self.used:
                        from placement_lint.source_text import Unreadable

                        raise Unreadable(CHANGED)
                    self.digest = actual
            self.data = data
        return self.data

    def mentions(self, tokens: Sequence[bytes]) -> bool:
        """Whether the file holds one of `tokens`. Bytes not held are read for this test only (a
        tree the workers read is scanned here one file at a time, never held whole); a file that
        has become unreadable since it was listed mentions nothing (a later read reports it)."""
        from placement_lint.source_text import Unreadable

        try:
            data = self.data if self.data is not None else read_bytes(self.path)
        except (OSError, Unreadable):
            return False
        return any(t in data for t in tokens)


class FactStore:
    """Facts per file, through the content-hash cache and, for many files, a process pool."""

    def __init__(self, use_cache: bool, cache_dir: Path | None, jobs: int | None, manifest: bool):
        self.enabled = use_cache and cache_dir is not None
        self.cache_dir = cache_dir
        self._cache = None
        self.manifest = None
        if self.enabled and manifest:
            from placement_lint.cache import Manifest

            self.manifest = Manifest(cache_dir, self.cache.salt)
        self.jobs = jobs
        self._pool = None  # one worker pool for the run's phases, started by the first that needs it
        self.lost: dict[str, str] = {}  # path -> why a file read again in a later phase could not be
        self.restated: list[str] = []  # paths whose bytes contradicted the digest they came with

    @property
    def cache(self):
        """The facts cache, created on first use: a run over files without trigger tokens (a
        pre-commit hook's usual case) never imports or hashes anything."""
        if self._cache is None and self.enabled:
            from placement_lint.cache import FactsCache

            self._cache = FactsCache(self.cache_dir)
        return self._cache

    def facts_for(self, items: list[tuple[str, Source, str]]) -> list[dict[str, Any] | None]:
        """Facts per (path, Source, mode) item; None for a file that cannot be read now (it
        vanished or changed since phase one): its reason is left in `self.lost`."""
        from placement_lint.cache import digest
        from placement_lint.source_text import Unreadable

        results: list[dict[str, Any] | None] = [None] * len(items)
        todo: list[int] = []
        for i, (path, src, mode) in enumerate(items):
            hit, given = None, src.digest
            try:
                if self.cache is not None:
                    src.digest = src.digest or digest(src.bytes())
                    hit = self.cache.get(src.digest, mode)
                if hit is None:
                    src.bytes()  # read here, so that a lost file never reaches the pool
            except (OSError, Unreadable) as exc:
                self.lost[path] = _reason(exc)
                continue
            if given and src.digest != given:
                self.restated.append(path)
            src.used = True
            if hit is not None:
                results[i] = hit
            else:
                todo.append(i)
        if todo:
            computed = self._compute([(items[i][0], items[i][1].bytes(), items[i][2]) for i in todo])
            for i, facts in zip(todo, computed):
                results[i] = facts
                if self.cache is not None and not facts.get("crashed"):  # (a crash is retried next run)
                    self.cache.put(items[i][1].digest, items[i][2], facts)
        return results

    @property
    def pool(self):
        """The run's worker pool (parallel.Pool: its processes start on first need)."""
        if self._pool is None:
            from placement_lint.parallel import Pool, item_timeout

            self._pool = Pool(self.jobs, item_timeout())
        return self._pool

    @property
    def pool_running(self) -> bool:
        """Whether a phase has started the worker pool (later maps run on it)."""
        return self._pool is not None and self._pool.running

    def _compute(self, items: list[tuple[str, bytes, str]]) -> list[dict[str, Any]]:
        """Facts of (path, bytes, mode) items on the pool, big files split across it."""
        from placement_lint import file_parts

        expanded, weights, counts = self._split(items, [len(item[1]) for item in items])
        results = self.pool.map_weighted(compute_facts, expanded, weights, on_crash=_crashed)
        out = []
        for item, facts in zip(items, _grouped(results, counts)):
            merged = facts[0] if len(facts) == 1 else file_parts.merge(facts)
            out.append(merged if merged is not None else self._whole(item))
        return out

    def _split(self, items: Sequence[tuple], sizes: Sequence[int]) -> tuple[list[tuple], list[int], list[int]]:
        """The pool's items for `items` (of these sizes): a big file's item once per part, with
        (k, n) appended (file_parts.py); their weights; and how many parts each item became."""
        from placement_lint import file_parts

        counts = [file_parts.count(size, self.pool.workers) for size in sizes]
        expanded, weights = [], []
        for item, size, n in zip(items, sizes, counts):
            for k in range(n):
                expanded.append((*item, (k, n)) if n > 1 else item)
                weights.append(size // n)
        return expanded, weights, counts

    def _whole(self, item: tuple[str, bytes, str]) -> dict[str, Any]:
        """A file's facts analysed in one piece: its parts could not stand for one analysis."""
        return self.pool.map(compute_facts, [item], on_crash=_crashed)[0]

    def _scan_crash(self, item: tuple, reason: str) -> tuple:
        """Phase one's result for a file whose analysis killed the worker (and a process of its
        own): a candidate whose facts are the crash (DTP000), with its digest so that a warm run
        finds it uncached and tries again."""
        from placement_lint.source_text import Unreadable

        digest = ""
        if self.cache is not None:
            from placement_lint.cache import digest as content_digest

            try:
                digest = content_digest(read_bytes(Path(item[0])))
            except (OSError, Unreadable) as exc:
                return (_reason(exc),)
        return (True, digest, crashed_facts(reason))

    def scan(self, items: list[tuple[str, int]], mode: str) -> list[tuple]:
        """`scan_files` over (path, size) items on the pool, in `mode`, through the cache."""
        from functools import partial

        # (the workers import LibCST at their first candidate, in parallel, while the parent,
        # which hands every later phase to them as well, never imports it: ~0.2 s less serial time)
        # many small batches: the cost is in the candidates, which sizes do not predict
        from placement_lint.progress import Bar, bar_enabled

        bar = Bar("analysing files") if bar_enabled() else None
        expanded, weights, counts = self._split(items, [size for _, size in items])
        try:
            results = self.pool.map_weighted(partial(scan_files, mode=mode, cache=self.cache), expanded, weights,
                                             per_worker=SCAN_BATCHES_PER_WORKER,
                                             progress=bar.update if bar is not None else None,
                                             on_crash=self._scan_crash)
        finally:
            if bar is not None:
                bar.close()
        return [parts[0] if len(parts) == 1 else self._joined(path, parts, mode)
                for (path, _), parts in zip(items, _grouped(results, counts))]

    def _joined(self, path: str, results: list[tuple], mode: str) -> tuple:
        """Phase one's result for a file from its parts' (scan_files' form)."""
        from placement_lint import file_parts
        from placement_lint.source_text import Unreadable

        unreadable = next((r for r in results if len(r) == 1), None)
        if unreadable is not None:
            return unreadable
        crashed = next((r for r in results if r[2] is not None and r[2].get("crashed")), None)
        if crashed is not None:  # (_scan_crash's result: the file's DTP000)
            return crashed
        if len({r[:2] for r in results}) > 1:  # the parts read different bytes
            return (CHANGED,)
        candidate, digest = results[0][:2]
        shown = digest if self.cache is not None else ""
        if not candidate:
            return results[0]
        parts = [r[2] for r in results]
        merged = file_parts.merge(parts)
        if merged is None:  # the parts cannot stand for one analysis: the file in one piece
            try:
                data = read_bytes(Path(path))
            except (OSError, Unreadable) as exc:
                return (_reason(exc),)
            from placement_lint.cache import digest as content_digest

            if content_digest(data) != digest:
                return (CHANGED,)
            merged = self._whole((path, data, mode))
        if self.cache is not None and "_part" in parts[0] and not merged.get("crashed"):
            self.cache.put(digest, mode, merged)  # (computed by the parts, not served by the cache)
        return (True, shown, merged)

    def close(self) -> None:
        """Stop the worker pool, if one was started."""
        if self._pool is not None:
            self._pool.close()


def _grouped(results: Sequence[Any], counts: Sequence[int]) -> list[list[Any]]:
    """`results` cut into consecutive runs of these lengths (each item's parts, FactStore._split)."""
    it = iter(results)
    return [[next(it) for _ in range(n)] for n in counts]


def start_early_late(store: FactStore, index, sources: dict[str, Source], facts: dict[str, dict[str, Any]]):
    """Start phase two b's first round (the files the first-pass index wants whole) on the running
    pool, from a thread that only waits on it: (items, future of their facts), or None when there
    is nothing to start or no pool is running (in one process a thread would only contend)."""
    from placement_lint.facts import WHOLE_FILE_MODES

    if not store.pool_running:
        return None
    index.follow_all()
    late = sorted(p for p in index.wanted if p in sources and facts.get(p, {}).get("mode") not in WHOLE_FILE_MODES)
    if not late:
        return None
    from concurrent.futures import ThreadPoolExecutor

    items = [(p, sources[p], "whole") for p in late]
    thread = ThreadPoolExecutor(1)
    job = thread.submit(store.facts_for, items)
    thread.shutdown(wait=False)  # the thread ends with its one job; the caller joins the job
    return items, job


#: batches a worker gets in the pooled phase one (parallel.Pool.map_weighted's per_worker)
SCAN_BATCHES_PER_WORKER = 32
