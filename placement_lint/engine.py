"""Engine: paths -> discovery -> prefilter -> per-file facts -> project index -> rules ->
suppressions -> findings. Rules read facts; they never walk the filesystem."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from placement_lint.findings import Confidence, Finding, Report


def display_path(path: Path, cwd: Path) -> str:
    """Relative to the working directory when under it (DESIGN.md contract), with / separators.
    Textual (abspath, not realpath): one syscall-free string operation per file."""
    full = os.path.abspath(path)
    base = str(cwd)
    if full.startswith(base.rstrip(os.sep) + os.sep):
        full = full[len(base.rstrip(os.sep)) + 1 :]
    return full.replace(os.sep, "/")


def read_bytes(path: Path) -> bytes:
    """A source file's bytes: regular files only, at most source_text.max_file_size() bytes.
    Raises source_text.Unreadable (or OSError) with the reason."""
    from placement_lint.source_text import read_source

    return read_source(path)


def _reason(exc: BaseException) -> str:
    """Why a file was not read: an Unreadable's reason, an OSError's (a symlink loop said so)."""
    from placement_lint.source_text import os_reason

    return os_reason(exc) if isinstance(exc, OSError) else str(exc)


def compute_facts(items: Sequence[tuple[str, bytes, str]]) -> list[dict[str, Any]]:
    """Facts for (path, bytes, mode) items. Top level so a process pool can run it."""
    from placement_lint.facts import file_facts

    return [file_facts(data, mode) for _, data, mode in items]


def crashed_facts(reason: str) -> dict[str, Any]:
    """The facts of a file whose analysis killed the process analysing it (a native crash: the
    depth guard keeps LibCST from what is known to crash it), alone in a fresh process too."""
    from placement_lint.facts import EMPTY

    return {**EMPTY, "parsed": True, "crashed": True, "error": {"line": 1, "column": 1, "message":
            f"parser crashed ({reason}): the process analysing this file died, twice; not analysed"}}


def read_error(shown: str, exc: BaseException | str) -> dict[str, Any]:
    """The error of a file that could not be stat'ed or read (`exc`, or its reason from a worker)."""
    reason = exc if isinstance(exc, str) else _reason(exc)
    return {"path": shown, "message": f"cannot read file: {reason}"}


def scan_files(items: Sequence[tuple[str, int]], mode: str, cache) -> list[tuple]:
    """Phase one for files the parent has not read, in a worker: per (path, size) item, read the
    file, prefilter it and, for a candidate, get its facts in `mode` (through `cache`, a
    cache.FactsCache or None). Per item: (reason,) when unreadable, else (is_candidate, digest,
    facts): digest "" unless a candidate and `cache` is given, facts None unless a candidate.
    Top level so a process pool can run it; the bytes stay in the worker."""
    from placement_lint import prefilter
    from placement_lint.facts import file_facts
    from placement_lint.source_text import Unreadable, decodable

    out: list[tuple] = []
    for path, _ in items:
        try:
            data = read_bytes(Path(path))
        except (OSError, Unreadable) as exc:
            out.append((_reason(exc),))
            continue
        if not prefilter.might_match(data) and decodable(data):  # an undecodable file is reported (DTP000)
            out.append((False, "", None))
            continue
        digest, facts = "", None
        if cache is not None:
            from placement_lint.cache import digest as content_digest

            digest = content_digest(data)
            facts = cache.get(digest, mode)
        if facts is None:
            facts = file_facts(data, mode)
            if cache is not None:
                cache.put(digest, mode, facts)
            if may_define_leaky_style(facts):
                # phase two will analyse this file in full (it defines a style whose hook leaves
                # DTensor, and so names it): do it now, in parallel, instead of serially later;
                # the parent restores the first-pass facts if its index disagrees
                facts = file_facts(data, "full")
                if cache is not None:
                    cache.put(digest, "full", facts)
            elif alone_has_findings(path, facts, mode):
                # phase three would position this file (it has a finding on its own): do it now,
                # in parallel, rather than serially after the index is built
                mode_positions = "positions" + mode
                facts = (cache.get(digest, mode_positions) if cache is not None else None) or file_facts(data, mode_positions)
                if cache is not None:
                    cache.put(digest, mode_positions, facts)
        out.append((True, digest, facts))
    return out


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

                        raise Unreadable("its content changed while placement-lint ran; run again")
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
            from placement_lint.parallel import Pool

            self._pool = Pool(self.jobs)
        return self._pool

    @property
    def pool_running(self) -> bool:
        """Whether a phase has started the worker pool (later maps run on it)."""
        return self._pool is not None and self._pool.running

    def _compute(self, items: list[tuple[str, bytes, str]]) -> list[dict[str, Any]]:
        return self.pool.map(compute_facts, items, on_crash=lambda item, reason: crashed_facts(reason))

    def _scan_crash(self, item: tuple[str, int], reason: str) -> tuple:
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
        try:
            return self.pool.map_weighted(partial(scan_files, mode=mode, cache=self.cache), items,
                                          [size for _, size in items], per_worker=SCAN_BATCHES_PER_WORKER,
                                          progress=bar.update if bar is not None else None,
                                          on_crash=self._scan_crash)
        finally:
            if bar is not None:
                bar.close()

    def close(self) -> None:
        """Stop the worker pool, if one was started."""
        if self._pool is not None:
            self._pool.close()


def _early_late(store: FactStore, index, sources: dict[str, Source], facts: dict[str, dict[str, Any]],
                whole_modes: tuple[str, ...]):
    """Start phase two b's first round (the files the first-pass index wants whole) on the running
    pool, from a thread that only waits on it: (items, future of their facts), or None when there
    is nothing to start or no pool is running (in one process a thread would only contend)."""
    if not store.pool_running:
        return None
    index.follow_all()
    late = sorted(p for p in index.wanted if p in sources and facts.get(p, {}).get("mode") not in whole_modes)
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

#: rounds of phase two b (files reached by resolving references, then the files they reach...)
LATE_ROUNDS = 4

#: below this many files a run reads them rather than loading the stat manifest
MANIFEST_MIN_FILES = 20


def lint(
    paths: Sequence[str | Path],
    config,
    *,
    jobs: int | None = None,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    cwd: Path | None = None,
    overlay: dict[str, bytes] | None = None,
) -> Report:
    """`overlay`: {path: bytes} analysed instead of what the disk holds (an editor's unsaved
    buffer, stdin); such a path need not exist."""
    from placement_lint import prefilter
    from placement_lint.discovery import discover

    from placement_lint.source_text import max_file_size, not_regular

    start = time.perf_counter()
    max_file_size()  # a bad PLACEMENT_LINT_MAX_FILE_SIZE is a usage error before any work
    cwd = (cwd or Path.cwd()).resolve()
    if str(cwd) != os.path.realpath(os.getcwd()):
        # the API's `cwd`: relative paths name files under it, not under this process's directory
        paths = [p if os.path.isabs(p) else os.path.join(cwd, p) for p in map(os.fspath, paths)]
    overlay = {os.path.normpath(os.path.join(cwd, p)): data for p, data in (overlay or {}).items()}
    errors: list[dict[str, Any]] = []  # per path: a directory or file that could not be read
    on_disk = [p for p in paths if os.path.normpath(os.path.join(cwd, p)) not in overlay or os.path.exists(p)]
    # (no path at all means the current directory; paths that are all unsaved buffers mean none)
    files = discover(on_disk, config, errors=errors) if on_disk or not paths else []
    known = {os.path.normpath(os.path.join(cwd, f)) for f in files}
    files += [Path(p) for p in overlay if p not in known]
    if cache_dir is None and use_cache:
        cache_dir = Path(getattr(config, "root", cwd)) / ".placement_lint_cache"
    # the stat manifest pays off on trees; for the few files a pre-commit hook passes, reading them is cheaper
    store = FactStore(use_cache, cache_dir, jobs, manifest=len(files) > MANIFEST_MIN_FILES)

    facts: dict[str, dict[str, Any]] = {}
    sources: dict[str, Source] = {}
    candidates: list[str] = []
    manifest = store.manifest
    unchanged = True
    # a run that reports only medium and high findings need not select rank-only test functions:
    # the analyzer reports their rank slices at low (regions.select_blocks, skip_test_rank)
    skip_mode = getattr(config, "min_confidence", Confidence.MEDIUM) >= Confidence.MEDIUM

    # Stat every file; the manifest knows the unchanged ones (not even read). The others are read
    # and prefiltered here, or, when they are enough bytes for the worker pool, by the workers,
    # which also compute the candidates' facts: the parent then never holds their bytes.
    slots: list[Any] = [None] * len(files)  # per file: (shown, Source, is_candidate), an error, or None: to read
    to_read: list[tuple[int, Path, str, os.stat_result]] = []
    for i, path in enumerate(files):
        shown = display_path(path, cwd)
        data = overlay.get(os.path.normpath(os.path.join(cwd, path))) if overlay else None
        if data is not None:  # never from the manifest, never recorded in it: not the disk's bytes
            from placement_lint.cache import digest

            candidate = prefilter.might_match(data)
            slots[i] = (shown, Source(path, data, digest(data) if candidate else ""), candidate)
            unchanged = False
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            slots[i] = read_error(shown, exc)
            continue
        why = not_regular(st.st_mode)  # a FIFO, a device: never opened (read_bytes checks again, on the descriptor)
        if why:
            slots[i] = read_error(shown, why)
            continue
        known = manifest.lookup(shown, st) if manifest is not None else None
        if known is not None:
            # unchanged since the last run (a skipped file may still have a digest: phase two b)
            slots[i] = (shown, Source(path, digest=known or manifest.late_digest(shown)), known != "")
        else:
            unchanged = False
            to_read.append((i, path, shown, st))
    scanned: dict[str, dict[str, Any]] = {}  # facts the workers computed in phase one
    if to_read and store.pool.would_pool([st.st_size for *_, st in to_read]):
        from placement_lint.facts import SKIP_TEST_RANK

        mode = SKIP_TEST_RANK if skip_mode else ""
        try:
            results = store.scan([(os.fspath(path), st.st_size) for _, path, _, st in to_read], mode)
        except BaseException:
            store.close()
            raise
        for (i, path, shown, st), res in zip(to_read, results):
            if len(res) == 1:
                slots[i] = read_error(shown, res[0])
                continue
            is_candidate, file_digest, file_facts = res
            if manifest is not None:
                manifest.record(shown, st, file_digest)
            src = Source(path, digest=file_digest)
            src.used = is_candidate  # a worker served its facts: a later read must find the same bytes
            slots[i] = (shown, src, is_candidate)
            if is_candidate:
                scanned[shown] = file_facts
    else:
        from placement_lint import prefilter
        from placement_lint.source_text import Unreadable, decodable

        for i, path, shown, st in to_read:
            try:
                src = Source(path, read_bytes(path))
            except (OSError, Unreadable) as exc:
                slots[i] = read_error(shown, exc)
                continue
            # an undecodable file is a candidate: its facts report why (DTP000), it is not skipped
            is_candidate = prefilter.might_match(src.data) or not decodable(src.data)
            if manifest is not None:
                from placement_lint.cache import digest

                src.digest = digest(src.data) if is_candidate else ""
                manifest.record(shown, st, src.digest)
            slots[i] = (shown, src, is_candidate)
    for slot in slots:
        if isinstance(slot, dict):
            errors.append(slot)
            continue
        shown, src, is_candidate = slot
        sources[shown] = src
        if is_candidate:
            candidates.append(shown)

    # (the facts module is imported only when a file is a candidate: a run over token-less files
    # needs no facts code)
    skip = ""
    if candidates and skip_mode:
        from placement_lint.facts import SKIP_TEST_RANK as skip

    def analyse(paths: Iterable[str], mode: str) -> None:
        items = [(p, sources[p], mode) for p in paths if p in sources]
        take(items, store.facts_for(items))

    def take(items: list[tuple[str, Source, str]], results: list[dict[str, Any] | None]) -> None:
        """Record the facts `store.facts_for(items)` returned (`analyse`'s second half)."""
        for (p, _, _), f in zip(items, results):
            if f is not None:
                facts[p] = f
                continue
            # read again after phase one, the file was gone or different: an error entry, and the
            # file leaves the run (its earlier facts would mix two contents)
            errors.append(read_error(p, store.lost.pop(p)))
            facts.pop(p, None)
            sources.pop(p, None)
            if manifest is not None:
                manifest.forget(p)
        if manifest is not None:
            while store.restated:  # the manifest's digest was wrong: the next run reads the file again
                manifest.forget(store.restated.pop())

    def analyse_late(paths: list[str], mode: str) -> None:
        """Phases two and two b: files the prefilter may have skipped, analysed whole; the
        manifest keeps their digests so that a warm run need not read them."""
        analyse(paths, mode)
        record_late(paths)

    def record_late(paths: list[str]) -> None:
        if manifest is not None:
            for p in paths:
                if p in sources:
                    manifest.record_late_digest(p, sources[p].digest)

    try:
        if scanned:
            # the workers' facts, and the cache's for the candidates the manifest knew, in file order
            analyse([p for p in candidates if p not in scanned], skip)
            done = dict(facts)
            facts.clear()
            for p in candidates:
                if p in scanned or p in done:  # (not a file lost since phase one)
                    facts[p] = scanned[p] if p in scanned else done[p]
            del done
        else:
            analyse(candidates, skip)  # mode "" or SKIP_TEST_RANK

        from placement_lint.facts import WHOLE_FILE_MODES
        from placement_lint.index import ProjectIndex

        from placement_lint.resolution import Resolver

        real_paths = {shown: p if os.path.isabs(p := os.fspath(src.path)) else os.path.abspath(p) for shown, src in sources.items()}
        scans = None
        if store.cache is not None:
            from placement_lint.cache import ScanStore

            scans = ScanStore(store.cache_dir, store.cache.salt)
        resolver = Resolver(real_paths.values(), scans.entries if scans is not None else None)
        index = ProjectIndex(facts, real_paths, resolver)
        # Phase two b's first round is known already: while the pool analyses it, this process
        # finds the files that name a leaky style (phase two, serial), instead of after it
        early = _early_late(store, index, sources, facts, WHOLE_FILE_MODES)
        # Phase two: a file that applies a project style by name (`"gate": NoParallel()`) has no
        # static trigger token, and in the first pass the applying code may sit in a dropped region.
        # Now that the index knows the leaky style names, analyse the files that name them in full.
        names = sorted(index.leaky_style_names())
        named: list[str] = []
        if names:
            recorded = manifest.late if manifest is not None else {}
            if unchanged and recorded.get("names") == names:
                late = [p for p in recorded.get("paths", ()) if p in sources]
            else:
                tokens = [n.encode() for n in names]
                late = [p for p, src in sources.items() if src.mentions(tokens)]
                if manifest is not None:
                    manifest.late = {"names": names, "paths": late}
                    manifest.changed = True
            named = late
        if early is not None:
            items, job = early
            take(items, job.result())
            record_late([p for p, _, _ in items])
            index = ProjectIndex(facts, real_paths, resolver)
        if names:
            late = [p for p in named if facts.get(p, {}).get("mode") != "full"]
            if late:
                analyse_late(late, "full")
                index = ProjectIndex(facts, real_paths, resolver)
        # a worker analysed in full a file it took for a leaky style's home (scan_files); where the
        # index disagrees, the file gets its first-pass facts back, as if nobody had guessed
        restore = sorted({p for p, f in scanned.items() if f.get("mode") == "full" and may_define_leaky_style(f)}
                         - set(named))
        if restore:
            analyse(restore, skip)
            index = ProjectIndex(facts, real_paths, resolver)
        # Phase two b: references the index resolved to files (or regions) that were not analysed:
        # a style class reached through re-exports or subclasses, the project function a local
        # tensor is passed to. Analysed whole (positions only if a finding cites them, in phase
        # three), a few rounds (calls several files deep).
        for _ in range(LATE_ROUNDS):
            index.follow_all()
            late = sorted(p for p in index.wanted if p in sources and facts.get(p, {}).get("mode") not in WHOLE_FILE_MODES)
            if not late:
                break
            analyse_late(late, "whole")
            index = ProjectIndex(facts, real_paths, resolver)
        index.count_style_uses()
        if manifest is not None:
            manifest.save()
        if scans is not None and resolver.stored_changed:
            scans.save()

        # Phase three: positions, only for the files that have findings (and the files holding the
        # hooks those findings point to); then the rules run again on positioned facts.
        first = list(run_rules(index, config, suppress=False)) if facts else []
        need = {f.path for f in first} | {path for fqn in index.leaky_styles() for path in [index.classes[fqn][0]]}
        need |= {r.path for f in first for r in f.related if r.path in facts}  # a callee's evidence, a hook
        whole = sorted(p for p in need if facts[p].get("mode") == "whole")
        need = {p for p in need if facts[p].get("mode") in ("", skip)}
        if need or whole:
            # their first-pass facts are replaced: let them go first (with the index, which holds
            # them too), so that a big file's two sets of facts never live at once. The key stays,
            # so the files keep their order
            index = first = None  # type: ignore[assignment]
            scanned.clear()  # (phase one's facts, kept for `restore` above)
            for p in (*need, *whole):
                facts[p] = {}
        if need:
            analyse(sorted(need), "positions" + skip)
        if whole:
            analyse(whole, "full")  # the same whole-file analysis, now with positions
        if need or whole:
            index = ProjectIndex(facts, real_paths, resolver)
            index.count_style_uses()
        if manifest is not None:
            manifest.save()  # (what phase three forgot: a file lost, a digest its bytes contradicted)
    finally:
        store.close()  # the pool, if a phase started one, serves no later phase

    findings = list(run_rules(index, config)) if facts else []
    parsed = sum(1 for f in facts.values() if f.get("parsed"))
    # the findings carry all the report needs: the facts (most of a big file's memory) go now
    index = None
    facts.clear()
    findings.sort(key=Finding.sort_key)
    if any((f.fix or {}).get("imports") or (f.fix or {}).get("add_keyword") for f in findings):
        from placement_lint.fixes import complete_imports

        complete_imports(findings)  # the fixes' import edits, read from the few files with fixes
    return Report(
        findings=findings,
        errors=errors,
        files_seen=len(files),
        files_parsed=parsed,
        seconds=time.perf_counter() - start,
    )


def run_rules(index, config, suppress: bool = True) -> Iterable[Finding]:
    from placement_lint.rule import FileContext, all_rules
    from placement_lint.suppression import is_suppressed

    rules = [r() for r in all_rules()]
    min_conf = getattr(config, "min_confidence", Confidence.MEDIUM)
    for path, facts in index.iter_files():
        table = facts.get("suppressions") or {}
        found: list[Finding] = []
        err = facts.get("error")
        if err:
            found.append(parse_error_finding(path, err))
        ctx = FileContext(path=path, facts=facts, index=index)
        for rule in rules:
            if rule.CODE == "DTP000" or not config.rule_enabled(rule.CODE, path):
                continue
            found.extend(rule.check(ctx))
        for f in found:
            if f.code == "DTP000" and not config.rule_enabled("DTP000", path):
                continue
            if f.confidence < min_conf and f.code != "DTP000":
                continue
            if suppress and is_suppressed(table, f.line, f.code, f.slug):
                continue
            yield f


def parse_error_finding(path: str, err: dict[str, Any]) -> Finding:
    return Finding(
        code="DTP000", slug="parse-error", path=path, line=err["line"], column=err["column"],
        end_line=err["line"], end_column=err["column"], message=err["message"], confidence=Confidence.HIGH,
    )
