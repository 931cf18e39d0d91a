"""Per-rank entry point: `python -m placement_lint.runtime.worker --spec SPEC.json`.

Started by torchrun (one process per rank) or directly for `--backend sim`. Runs each harness of
the spec under a PlacementMonitor, gathers the payloads once per harness and, on rank 0, writes
the verdicts to the result file. Failures never hang the job: an exception is written to
`errors/rank<R>.json` and the process exits at once (torchrun then stops the other ranks), and a
watchdog ends the process if the launcher's timeout machinery itself is gone.

Under torchrun the process torchrun started is a small supervisor (`supervise`): it forks the rank
before torch is imported and records how the rank ended in `exits/rank<R>.json` (exit code or
signal, with the time), which no rank can do for itself when it is killed or calls os._exit. The
supervisor, the rank and whatever the harness starts share one process group, recorded in
`pids/rank<R>.json`; the supervisor kills what is left of that group when the rank ends.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")


def _set_parent_death_signal(parent: int | None = None) -> None:
    """Die with the parent (torchrun, or the supervisor for a rank): a killed launcher must not
    leave ranks behind. `parent`: the pid the parent had, to notice one already gone (orphans
    are not always adopted by pid 1: the launcher is a subreaper)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != (parent or os.getppid()) or os.getppid() == 1:  # gone before prctl
            os._exit(1)
    except OSError:
        pass


class _Progress:
    def __init__(self, folder: str | None, rank: int):
        self.path = os.path.join(folder, f"rank{rank}.txt") if folder else None

    def __call__(self, text: str) -> None:
        if self.path:
            try:
                with open(self.path, "w") as fh:
                    fh.write(text)
            except OSError:
                pass


def _write_json_atomic(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)


def _watchdog(seconds: float, progress: _Progress) -> None:
    def fire():
        progress("watchdog: timeout")
        os._exit(124)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def loaded_files(watch) -> list[str]:
    """Which of the watched files (those with static findings) this process imported: a finding
    matched only by a module or plan key (a config object) in a file the run never imported was
    not in effect."""
    paths = {os.path.abspath(p) for p, _line in (watch or ())}
    if not paths:
        return []
    loaded = {os.path.abspath(f) for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)}
    return sorted(paths & loaded)


def monitor_for(spec: dict, harness: str):
    """The PlacementMonitor of a check run of `harness` (torchrun worker and simulation alike)."""
    from placement_lint.runtime.monitor import PlacementMonitor

    return PlacementMonitor(force=(spec.get("force") or {}).get(harness) or {},
                            watch=[tuple(w) for w in spec.get("watch", [])],
                            force_slices=[tuple(w) for w in (spec.get("force_slices") or {}).get(harness, [])])


def probe_for(enabled: bool):
    """A GradProbe when the check has a reference run to compare with, else a no-op context."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    from placement_lint.runtime.gradprobe import GradProbe

    return GradProbe()


def finish_check(res: dict, spec: dict, model, *, harness: str, backend: str, t0: float, run_s: float,
                 compile_mode: str, compiled_regions: int) -> dict:
    """Complete the verdicts of one harness (rank 0 / the simulation): where the flagged
    parameters are defined, timings, the compile mode, which analysed files were imported."""
    import torch

    from placement_lint.runtime.harness import require_module

    require_module(model, harness)  # --backend sim arrives here without worker.run's check
    if isinstance(model, torch.nn.Module):
        from placement_lint.runtime.attribution import param_location

        for p in res["params"]:
            if p.get("status") == "diverging" or p.get("matches_reference") is False:
                p["location"] = param_location(model, p["name"])
    res.update({"harness": harness, "seconds": round(time.perf_counter() - t0, 4),
                "harness_seconds": round(run_s, 4), "backend": backend,
                "compile": {"mode": compile_mode, "compiled_regions": compiled_regions}})
    if compile_mode == "not-checked" and compiled_regions:
        res.setdefault("warnings", []).append(f"{compiled_regions} torch.compile region(s) were not checked: "
                                              "this torch cannot force them to run eagerly")
    res["loaded_files"] = loaded_files(spec.get("watch"))
    if res.get("localization") and isinstance(model, torch.nn.Module):
        from placement_lint.runtime.gradprobe import module_locations

        where = module_locations(model, [loc["module"] for loc in res["localization"]])
        for loc in res["localization"]:
            if loc["module"] in where:
                loc["location"] = where[loc["module"]]
    return res


def reference_run(fn, ctx, out_path: str, harness: str | None = None) -> int:
    """Run a harness as the one-rank reference and save its parameter gradients (full tensors,
    on the CPU) for `--reference`; returns how many parameters had a gradient."""
    import torch

    from placement_lint.runtime import _compat

    from placement_lint.runtime.gradprobe import GradProbe

    from placement_lint.runtime.harness import require_module

    with _compat.eager_compiled_regions(), GradProbe() as probe:
        model = fn(ctx)
    code = getattr(fn, "__code__", None)
    require_module(model, harness or (f"{code.co_filename}:{fn.__name__}" if code else repr(fn)))
    grads = {}
    if isinstance(model, torch.nn.Module):
        for name, p in model.named_parameters():
            g = p.grad
            if g is None:
                continue
            g = g.full_tensor() if isinstance(g, _compat.DTensor) else g
            grads[name] = g.detach().to("cpu")
    if getattr(fn, "supports_reference", True):
        torch.save(grads, out_path)
        torch.save(probe.collect(model if isinstance(model, torch.nn.Module) else None), probe_path(out_path))
    return len(grads)


def probe_path(reference_path: str) -> str:
    """Where the reference run keeps its GradProbe records, next to its parameter gradients."""
    return reference_path + ".probe"

def run(spec: dict) -> int:
    """One rank: every harness of the spec; 0 on success, os._exit(1) after a reported failure."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    progress = _Progress(spec.get("progress"), rank)
    current = {"harness": None}
    if spec.get("timeout"):
        # backstop only: the launcher kills the group at --timeout; this covers a dead launcher
        _watchdog(float(spec["timeout"]) + 15.0, progress)
    try:
        progress("importing torch")
        import torch
        import torch.distributed as dist
        from datetime import timedelta

        from placement_lint.runtime import _compat
        from placement_lint.runtime.harness import HarnessContext, load_harness, require_module
        from placement_lint.runtime.payload import gather
        from placement_lint.runtime.verdicts import compute

        backend = spec["backend"]
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        progress("init_process_group")
        dist.init_process_group(backend, timeout=timedelta(seconds=float(spec.get("timeout") or 1800)))
        mode = spec.get("mode", "check")
        results = []
        compiled = {"n": 0}
        _count_compile(torch, compiled)
        for h in spec["harnesses"]:
            current["harness"] = h
            ctx = HarnessContext(rank=rank, world_size=world, local_rank=local_rank, device=device,
                                 backend=backend, reference=(mode == "reference"))
            progress(f"{h}: loading")
            fn = load_harness(h, spec.get("cwd"))
            compiled["n"] = 0
            t0 = time.perf_counter()
            if mode == "check":
                ref_path = (spec.get("reference") or {}).get(h)
                with_ref = bool(ref_path and getattr(fn, "supports_reference", True) and os.path.exists(ref_path))
                with (_compat.eager_compiled_regions() as compile_mode, monitor_for(spec, h) as mon,
                      probe_for(with_ref) as probe):
                    progress(f"{h}: running the harness")
                    model = fn(ctx)
                require_module(model, h)  # on every rank, before any collective of ours
                run_s = time.perf_counter() - t0
                module = model if isinstance(model, torch.nn.Module) else None
                ref = torch.load(ref_path, map_location="cpu", weights_only=True) if with_ref else None
                progress(f"{h}: collecting")
                payload = mon.collect(module, reference=ref)
                if probe is not None:
                    payload["probe"] = probe.collect(module)
                progress(f"{h}: gathering (all_gather_object)")
                payloads = gather(payload)
                if rank == 0:
                    ref_probe = None
                    if with_ref and os.path.exists(probe_path(ref_path)):
                        ref_probe = torch.load(probe_path(ref_path), map_location="cpu", weights_only=True)
                    results.append(finish_check(compute(payloads, spec.get("reference_rtol"), ref_probe), spec, model,
                                                harness=h, backend=backend, t0=t0, run_s=run_s,
                                                compile_mode=compile_mode, compiled_regions=compiled["n"]))
            elif mode == "reference":
                progress(f"{h}: reference run")
                results.append({"harness": h, "params": reference_run(fn, ctx, spec["reference_out"][h], h)})
            else:  # "plain": the harness without the monitor (benchmark baseline)
                model = fn(ctx)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                results.append({"harness": h, "seconds": round(time.perf_counter() - t0, 4)})
            progress(f"{h}: done")
            dist.barrier()
        if rank == 0:
            _write_json_atomic(spec["result"], {"results": results, "world_size": world,
                                                "torch": torch.__version__})
        progress("finished")
        dist.destroy_process_group()
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the launcher
        failed_at = time.time()  # before any formatting: the launcher orders failures by it
        _report_failure(spec, rank, current["harness"], exc, failed_at)
        progress(f"failed: {type(exc).__name__}")
        traceback.print_exception(type(exc), exc, exc.__traceback__)  # into the rank's log
        sys.stderr.flush()
        # no destroy_process_group: peers may be blocked in a collective with us; torchrun sees
        # the non-zero exit and terminates them
        os._exit(1)


def _count_compile(torch, counter: dict) -> None:
    orig = getattr(torch, "compile", None)
    if orig is None or getattr(orig, "_placement_lint_counted", False):
        return

    def counted(*args, **kwargs):
        counter["n"] += 1
        return orig(*args, **kwargs)

    counted._placement_lint_counted = True  # type: ignore[attr-defined]
    torch.compile = counted


def _report_failure(spec: dict, rank: int, harness: str | None, exc: BaseException,
                    failed_at: float | None = None) -> None:
    from placement_lint.errors import PlacementLintError

    folder = spec.get("errors")
    if not folder:
        return
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    try:
        _write_json_atomic(os.path.join(folder, f"rank{rank}.json"), {
            "rank": rank,
            "harness": harness,
            "type": type(exc).__name__,
            "message": str(exc),
            # a user mistake (bad harness, harness returning no module): one line, no rank, exit 2
            "usage": isinstance(exc, PlacementLintError),
            "where": _user_frame(exc, spec.get("cwd")),
            "traceback": "".join(tb[-12:]),
            "time": failed_at or time.time(),
        })
    except OSError:
        pass


def _user_frame(exc: BaseException, cwd: str | None) -> str:
    """path:line of the innermost traceback frame in the user's code, i.e. not in torch,
    placement-lint or the standard library: where a harness failure is worth looking first."""
    import sysconfig

    stdlib = os.path.abspath(sysconfig.get_paths()["stdlib"])
    skip = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "__file__", None):
        skip.append(os.path.dirname(os.path.abspath(torch.__file__)))
    where = ""
    for fs in traceback.extract_tb(exc.__traceback__):
        f = os.path.abspath(fs.filename)
        if any(f.startswith(d + os.sep) for d in skip) or f.startswith("<"):
            continue
        if f.startswith(stdlib + os.sep) and "-packages" not in f:
            continue
        rel = os.path.relpath(f, cwd) if cwd and f.startswith(os.path.abspath(cwd) + os.sep) else f
        where = f"{rel}:{fs.lineno}"
    return where


def supervise(spec: dict) -> int:
    """torchrun's worker process: fork the rank, wait for it, record how it ended.

    Runs before torch is imported (fork is safe with one thread). The exit record is what names
    a rank that was killed by a signal or left through os._exit: the other ranks then only see a
    reset connection, and torchrun reports whichever failure it polled first."""
    import signal

    rank = int(os.environ.get("RANK", "0"))
    if os.getpgrp() != os.getpid():
        try:
            os.setpgid(0, 0)  # one group per rank, should this torchrun not start sessions
        except OSError:
            pass
    pgid = os.getpgrp()
    if spec.get("logs"):
        # the rank's stdout/stderr (a harness's prints, a crash's traceback) in its own log
        try:
            fd = os.open(os.path.join(spec["logs"], f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        except OSError:
            pass
    if spec.get("pids"):
        try:
            _write_json_atomic(os.path.join(spec["pids"], f"rank{rank}.json"),
                               {"rank": rank, "pid": os.getpid(), "pgid": pgid})
        except OSError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    me = os.getpid()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            _set_parent_death_signal(me)  # the rank dies with its supervisor
            code = run(spec)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never return into the supervisor's code

    def forward(signum, _frame):
        # torchrun (or a Ctrl-C) stopping the supervisor stops the whole group
        signal.signal(signum, signal.SIG_DFL)
        os.killpg(pgid, signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    try:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
    except ChildProcessError:  # pragma: no cover - reaped elsewhere
        code = 1
    ended = time.time()
    if code != 0 and spec.get("exits"):
        record = {"rank": rank, "pid": child, "time": ended}
        record.update({"signal": -code} if code < 0 else {"code": code})
        try:
            _write_json_atomic(os.path.join(spec["exits"], f"rank{rank}.json"), record)
        except OSError:
            pass
    from placement_lint.runtime.launcher import group_members

    for pid in group_members(pgid):  # what the harness started and left running
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if code < 0:  # die of the same signal: torchrun reports what happened to the rank
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="placement_lint.runtime.worker")
    ap.add_argument("--spec", required=True)
    parent = os.getppid()
    args = ap.parse_args(argv)
    _set_parent_death_signal(parent)
    with open(args.spec) as fh:
        spec = json.load(fh)
    if spec.get("backend") == "sim":
        from placement_lint.runtime.sim import run_sim

        return run_sim(spec)
    if os.name == "posix" and hasattr(os, "fork") and spec.get("exits"):
        return supervise(spec)
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
