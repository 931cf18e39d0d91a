"""Engine: paths -> discovery -> prefilter -> per-file facts -> project index -> rules ->
suppressions -> findings. Rules read facts; they never walk the filesystem."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from placement_lint import fact_store
from placement_lint.fact_store import FactStore, Source, may_define_leaky_style, read_error, start_early_late
from placement_lint.findings import Confidence, Finding, Report


def display_path(path: Path, cwd: Path) -> str:
    """Relative to the working directory when under it (DESIGN.md contract), with / separators.
    Textual (abspath, not realpath): one syscall-free string operation per file."""
    full = os.path.abspath(path)
    base = str(cwd)
    if full.startswith(base.rstrip(os.sep) + os.sep):
        full = full[len(base.rstrip(os.sep)) + 1 :]
    return full.replace(os.sep, "/")



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
    with collector_paused():
        return _lint(paths, config, jobs=jobs, use_cache=use_cache, cache_dir=cache_dir, cwd=cwd, overlay=overlay)


@contextlib.contextmanager
def collector_paused():
    """CPython's cyclic garbage collector paused, then restored as it was. This process keeps
    millions of small objects for the run (a big file's facts, the findings), none in a cycle,
    and the collector would scan them again and again as more are allocated: the rules' run over a
    4 MB file's facts took 1.3-1.8 s with it, 0.4-0.5 s without. The pool's workers are forked
    with it paused and collect once a batch (parallel._tracked)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _lint(paths: Sequence[str | Path], config, *, jobs: int | None, use_cache: bool, cache_dir: Path | None,
          cwd: Path | None, overlay: dict[str, bytes] | None) -> Report:
    from placement_lint import parallel, prefilter, source_text
    from placement_lint.discovery import discover
    from placement_lint.source_text import not_regular

    start = time.perf_counter()
    # this run's limits, from its configuration (the pool's workers, forked later, inherit them);
    # a bad PLACEMENT_LINT_MAX_FILE_SIZE or PLACEMENT_LINT_FILE_TIMEOUT is a usage error before any work
    source_text.configured_max = getattr(config, "max_file_size", None)
    parallel.configured_timeout = getattr(config, "file_timeout", None)
    source_text.max_file_size()
    parallel.item_timeout()
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
                src = Source(path, fact_store.read_bytes(path))  # (one place to read, for tests too)
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
        early = start_early_late(store, index, sources, facts)
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
        # hooks those findings point to) and lack them; then the rules run again on positioned facts.
        first = list(judged(index, config)) if facts else []
        need = {f.path for f, _ in first} | {path for fqn in index.leaky_styles() for path in [index.classes[fqn][0]]}
        need |= {r.path for f, _ in first for r in f.related if r.path in facts}  # a callee's evidence, a hook
        whole = sorted(p for p in need if facts[p].get("mode") == "whole")
        # (a first pass positioned as it went needs no second: analysis/fast_parse.py)
        need = {p for p in need if facts[p].get("mode") in ("", skip) and not facts[p].get("positioned")}
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

    if first is not None:  # phase three changed no facts: the first run's findings stand, unsuppressed
        findings = [f for f, hidden in first if not hidden]
    else:
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


def run_rules(index, config) -> Iterable[Finding]:
    """The findings the configuration reports, suppressed ones left out."""
    return (f for f, hidden in judged(index, config) if not hidden)


def judged(index, config) -> Iterable[tuple[Finding, bool]]:
    """Every finding the configuration reports, with whether a suppression comment hides it."""
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
            yield f, is_suppressed(table, f.line, f.code, f.slug)


def parse_error_finding(path: str, err: dict[str, Any]) -> Finding:
    return Finding(
        code="DTP000", slug="parse-error", path=path, line=err["line"], column=err["column"],
        end_line=err["line"], end_column=err["column"], message=err["message"], confidence=Confidence.HIGH,
    )
