"""`placement-lint confirm`: the static pass, then a short run on a real mesh, then verdicts.

Imported only when `confirm` is invoked (cli.py loads it lazily), and even then torch is imported
inside the command, so `placement-lint confirm --help` works without torch and a missing torch is
one clear error line with exit code 2.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import click

from placement_lint.errors import PlacementLintError, UsageError
from placement_lint.runtime import TORCH_MISSING

FORMATS = ("text", "concise", "json", "sarif", "github", "rdjson")

# Code that asks for its rank cannot be simulated in one process: every simulated rank would
# see rank 0 and the check would compare rank 0 with itself.
_RANK_QUERY = re.compile(r"\b(get_rank|get_local_rank|get_coordinate|get_node_local_rank)\s*\(|\bctx\.rank\b|\bctx\.local_rank\b")


def _rank_queries(files: list[Path]) -> list[str]:
    hits = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if _RANK_QUERY.search(code):
                hits.append(f"{f}:{i}: {line.strip()}")
    return hits


def _py_files(paths: list[str]) -> list[Path]:
    out = []
    for p in paths:
        pp = Path(p)
        if pp.is_dir():
            out.extend(sorted(pp.rglob("*.py")))
        elif pp.suffix == ".py":
            out.append(pp)
    return out


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on (taskset, cgroups)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def oversubscription_warning(nproc: int, backend: str) -> str | None:
    """gloo ranks are CPU processes: more of them than cores is slow (each imports torch and
    spins in collectives), not wrong. A warning, once, before the launch."""
    cores = cpu_cores()
    if backend == "gloo" and nproc > cores:
        return (f"--nproc {nproc}: {nproc} gloo ranks on {cores} CPU core(s) share the cores; start-up "
                "and collectives will be slow and --timeout may cut the run (fewer ranks are faster)")
    return None


@click.command("confirm", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--harness", "harnesses", multiple=True, required=True, metavar="FILE_OR_MODULE:FUNC",
              help="Harness callable (repeatable): path/to/file.py:func or package.module:func.")
@click.option("--nproc", type=click.IntRange(1), default=2, show_default=True, help="Ranks per node.")
@click.option("--backend", type=click.Choice(["auto", "nccl", "gloo", "sim"]), default="auto", show_default=True,
              help="auto: nccl when there is a CUDA device per rank, else gloo; sim: one process, simulated ranks.")
@click.option("--reference", is_flag=True, help="Also compare parameter gradients with a one-rank run of the harness.")
@click.option("--reference-rtol", type=click.FloatRange(min=0.0, min_open=True), metavar="R",
              help="Relative tolerance of --reference (default: from the lowest precision the model "
                   "computed in: 1e-3 fp32, 0.05 fp16, 0.1 bf16).")
@click.option("--verify-fix", is_flag=True, help="Rerun with the fix injected at each confirmed site and prove it.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds before the run is killed.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("-o", "--output-file", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--nnodes", help="torchrun --nnodes (multi-node).")
@click.option("--node-rank", type=int, help="torchrun --node-rank (multi-node).")
@click.option("--rdzv-endpoint", help="torchrun --rdzv-endpoint HOST:PORT (c10d rendezvous).")
@click.option("--master-addr", help="torchrun --master-addr.")
@click.option("--master-port", type=int, help="torchrun --master-port.")
@click.option("--keep-dir", type=click.Path(file_okay=False), help="Keep launch files (spec, logs, results) here.")
@click.option("--fix", "do_fix", is_flag=True,
              help="With --verify-fix: apply the fixes the run proved (they become safe fixes).")
def confirm(paths, harnesses, nproc, backend, reference, reference_rtol, verify_fix, timeout, fmt, output_file, config_path,
            nnodes, node_rank, rdzv_endpoint, master_addr, master_port, keep_dir, do_fix) -> int:
    """Run the static pass over PATHS, then the harness on NPROC ranks, and give every finding a
    runtime verdict: confirmed, refuted, double-count, mixed, inconclusive or not-reached."""
    try:
        from placement_lint.runtime import require_torch

        require_torch()
    except ImportError:
        raise PlacementLintError(TORCH_MISSING) from None
    from placement_lint import engine
    from placement_lint.config import load_config
    from placement_lint.runtime import merge
    from placement_lint.runtime.harness import harness_source_path
    from placement_lint.runtime.launcher import LaunchOptions

    cwd = os.getcwd()
    paths = list(paths) or ["."]
    for p in paths:
        if not os.path.exists(p):
            raise UsageError(f"{p}: no such file or directory")
    if do_fix and not verify_fix:
        raise UsageError("confirm --fix applies the fixes --verify-fix proves: pass --verify-fix too")
    from placement_lint.runtime.harness import check_harness

    for h in harnesses:
        check_harness(h, cwd)  # before the static pass and any launch: seconds, not a traceback
    config = load_config(Path(cwd), config_path, None)
    report = engine.lint(paths, config)
    watch = merge.watch_lines(report, cwd)

    if backend == "sim":
        sources = _py_files(paths)
        for h in harnesses:
            src = harness_source_path(h, cwd)
            if src is not None:
                sources.append(src)
        hits = _rank_queries(sources)
        if hits:
            shown = "\n  ".join(hits[:5]) + ("\n  ..." if len(hits) > 5 else "")
            raise UsageError("--backend sim cannot run code that asks for its rank (every simulated rank "
                             f"would see rank 0); use --backend gloo or nccl. Rank queries:\n  {shown}")
        from placement_lint.runtime.sim import unsupported_reason

        why = unsupported_reason()
        if why:
            raise UsageError(f"--backend sim: {why}")

    opts = LaunchOptions(nproc=nproc, backend=backend, timeout=timeout, nnodes=nnodes, node_rank=node_rank,
                         rdzv_endpoint=rdzv_endpoint, master_addr=master_addr, master_port=master_port,
                         keep_dir=keep_dir)
    if reference_rtol is not None and not (reference or verify_fix):
        raise UsageError("--reference-rtol needs --reference (or --verify-fix, which runs the reference)")
    if backend != "sim":
        from placement_lint.runtime.launcher import check_ports, resolve_backend

        check_ports(opts)  # before the reference run, which would take seconds first
        crowded = oversubscription_warning(nproc, resolve_backend(backend, nproc))
        if crowded:
            _warning(crowded)
    # the reference run's gradients live here; removed at the end unless --keep-dir
    work = keep_dir or (tempfile.mkdtemp(prefix="placement-lint-ref-") if reference or verify_fix else "")
    try:
        return _confirm_runs(report, harnesses, cwd, watch, opts, work, keep_dir, reference, verify_fix,
                             reference_rtol, nproc, backend, timeout, fmt, output_file, do_fix)
    finally:
        if work and not keep_dir:
            shutil.rmtree(work, ignore_errors=True)


def _confirm_runs(report, harnesses, cwd, watch, opts, work, keep_dir, reference, verify_fix, reference_rtol,
                  nproc, backend, timeout, fmt, output_file, do_fix=False) -> int:
    from placement_lint import reporters
    from placement_lint.runtime import merge
    from placement_lint.runtime.launcher import LaunchOptions, launch
    from placement_lint.runtime.matching import path_index

    base_spec = {"harnesses": list(harnesses), "cwd": cwd, "mode": "check", "watch": watch,
                 "reference_rtol": reference_rtol}

    ref_files: dict[str, str] = {}
    if reference or verify_fix:
        ref_files = {h: os.path.join(work, f"reference{i}.pt") for i, h in enumerate(harnesses)}
        ref_opts = LaunchOptions(nproc=1, backend=backend, timeout=timeout,
                                 keep_dir=os.path.join(work, "reference") if keep_dir else None)
        _progress(f"reference: one-rank run of {len(harnesses)} harness(es)")
        launch(dict(base_spec, mode="reference", reference_out=ref_files), ref_opts)
        base_spec["reference"] = ref_files

    _progress(f"check: {len(harnesses)} harness(es) on {nproc} rank(s), backend {backend}")
    result = launch(base_spec, opts)
    if result.get("remote"):
        click.echo("placement-lint: this node's ranks finished; node 0 reports the verdicts", err=True)
        return 0
    results = result["results"]
    for res in results:
        for w in res.get("warnings", []):
            click.echo(f"placement-lint: warning: {res.get('harness')}: {w}", err=True)
    paths = path_index(report, results, cwd)
    merge.merge(report, results, cwd, reference=bool(ref_files), paths=paths)
    _warn_if_nothing_matched(report, results)
    _warn_if_copies_differ(paths)
    summary = merge.runtime_summary(report, results)
    _warn_if_nothing_seen(summary)
    _tell_what_never_ran(summary)

    if verify_fix:
        force, slices = merge.verify_targets(results, report)
        if not force and not slices:
            _progress("verify-fix: nothing confirmed, nothing to fix")
        else:
            n = sum(len(v) for v in force.values()) + sum(len(v) for v in slices.values())
            _progress(f"verify-fix: rerun with the fix injected at {n} site(s)")
            fixed = launch(dict(base_spec, force=force, force_slices=slices), dict_opts(opts, keep_dir, "verify"))
            _annotate_fix(report, results, fixed["results"], force, slices)

    proven = _promote_proven_fixes(report)
    if do_fix:
        from placement_lint import fixes

        changes = fixes.plan(proven, unsafe=False)
        for path, (_old, new, _n) in changes.items():
            fixes.write_atomic(path, new)
        _progress(f"fix: {sum(c[2] for c in changes.values())} proven fix(es) applied in {len(changes)} file(s)")
    from placement_lint.cli import emit

    if fmt not in ("text", "json", "sarif"):  # those carry it in the report
        _progress(reporters.runtime_line(summary))
    emit(report, fmt, reporters.render(report, fmt, runtime_summary=summary), output_file)
    return merge.exit_code(report)


def _promote_proven_fixes(report) -> list:
    """A fix `--verify-fix` proved (the rerun with it injected has agreeing replicated gradients
    that match the reference) is safe: its applicability says so in every format."""
    proven = []
    for f in report.findings:
        ev = (f.runtime or {}).get("evidence") or {}
        if f.fix and f.fix.get("edits") and (ev.get("fix_verified") or {}).get("verified") is True:
            f.fix["applicability"] = "safe"
            f.fix["message"] = (f.fix.get("message") or "") + " (proven by confirm --verify-fix)"
            proven.append(f)
    return proven


def dict_opts(opts, keep_dir, sub):
    import dataclasses

    return dataclasses.replace(opts, keep_dir=os.path.join(keep_dir, sub) if keep_dir else None)


def _warn_if_nothing_matched(report, results) -> None:
    """Findings are matched to runtime sites by file path, or by package-relative path where the
    two files are byte-identical: analysing files the ranks do not run (another version of the
    package, a tree outside any package) makes every finding `not-reached`. Say so."""
    static = [f for f in report.findings if f.runtime and f.code < "DTP900"]
    seen = sum(len(r.get("sites", ())) for r in results if isinstance(r, dict))
    if any(r.get("loaded_files") for r in results if isinstance(r, dict)):
        return  # the ranks imported analysed files: the paths agree, the harness ran other code
    if static and seen and all(f.runtime["verdict"] == "not-reached" for f in static):
        _warning(
            f"none of the {len(static)} static finding(s) matched any of the {seen} site(s) the "
            "monitor saw; findings are matched by file path (or to a byte-identical copy of the same package "
            "file), so check that PATHS are the files the ranks import (e.g. put the analysed tree first on "
            "PYTHONPATH)"
        )


def _tell_what_never_ran(summary: dict) -> None:
    """Not-reached findings: which analysed files the ranks never imported and which plan entries
    no module ran, so that the user can extend the harness."""
    parts = []
    for key, what in (("not_imported_files", "files the ranks never imported"),
                      ("plan_entries_not_run", "plan entries no module ran")):
        items = summary.get(key) or []
        if items:
            shown = ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
            parts.append(f"{what}: {shown}")
    if parts:
        _progress("runtime: not reached: " + "; ".join(parts))


def _warn_if_copies_differ(paths) -> None:
    """Files the ranks ran whose package-relative path is an analysed file's but whose contents
    differ (another version of the package): their findings were not matched. One warning."""
    if not paths.differ:
        return
    ran, analysed = paths.differ[0]
    more = f" (and {len(paths.differ) - 1} more)" if len(paths.differ) > 1 else ""
    _warning(
        f"the ranks ran {ran} but the analysed {analysed} has other contents{more}: findings in "
        "such files are matched only to byte-identical copies, so they stay not-reached; analyse the copy "
        "the ranks import (or put the analysed tree first on PYTHONPATH)"
    )


def _warn_if_nothing_seen(summary: dict) -> None:
    """No site at all: an empty report then says nothing about the gradients (a model that never
    creates a DTensor, e.g. plain local shards, prints "All checks passed!" as well)."""
    if summary["sites_reached"] == 0:
        _warning(
            f"the monitor saw no DTensor conversion in {summary['harnesses']} harness(es) (no "
            "to_local/from_local/full_tensor/local_map call): did the model create any "
            "DTensor? The runtime check had nothing to judge"
        )


def _warning(text: str) -> None:
    """Printed even under PLACEMENT_LINT_QUIET, which silences progress lines only."""
    click.echo(f"placement-lint: warning: {text}", err=True)


def _progress(text: str) -> None:
    if os.environ.get("PLACEMENT_LINT_QUIET"):
        return
    click.echo(f"placement-lint: {text}", err=True)


def _annotate_fix(report, before: list[dict], after: list[dict], force: dict, slices: list) -> None:
    """Attach the proof to every finding that was confirmed: do replicated parameter gradients
    agree across ranks now, and do they match the one-rank reference?"""
    from placement_lint.runtime.merge import BAD

    summary = []
    by_h = {r.get("harness"): r for r in after}
    for h, res in by_h.items():
        if not force.get(h) and not slices.get(h):
            continue  # nothing was confirmed in this harness: nothing to prove
        params = res.get("params", [])
        diverging = [p["name"] for p in params if p.get("status") == "diverging"]
        mism = [p["name"] for p in params if p.get("matches_reference") is False]
        bad_sites = [f"{s['path']}:{s['line']}" for s in res.get("sites", []) if s["verdict"] == "confirmed"]
        summary.append({
            "harness": h,
            "forced_sites": sorted((force.get(h) or {}).keys()) + [f"{p}:{l}" for p, l in slices.get(h, [])],
            "forced_calls": res.get("forced_calls", 0),
            "params_agree": not diverging,
            "diverging_params": diverging,
            "matches_reference": (not mism) if any("matches_reference" in p for p in params) else None,
            "reference_mismatches": mism,
            "still_confirmed_sites": bad_sites,
        })
    for f in report.findings:
        rt = f.runtime or {}
        if rt.get("verdict") not in BAD:
            continue
        h = (rt.get("evidence") or {}).get("harness")
        proof = next((s for s in summary if s["harness"] == h), None)
        if proof is not None:
            ok = proof["params_agree"] and proof["matches_reference"] is not False and proof["forced_calls"] > 0
            rt.setdefault("evidence", {})["fix_verified"] = dict(proof, verified=ok)
    for s in summary:
        ok = s["params_agree"] and s["matches_reference"] is not False and s["forced_calls"] > 0
        _progress(f"verify-fix: {s['harness']}: {'fix proven' if ok else 'fix NOT proven'} "
                  f"(replicated gradients agree: {'yes' if s['params_agree'] else 'no: ' + ', '.join(s['diverging_params'])}; "
                  f"match reference: {({True: 'yes', False: 'no: ' + ', '.join(s['reference_mismatches']), None: 'n/a'})[s['matches_reference']]}; "
                  f"{s['forced_calls']} call(s) patched)")
