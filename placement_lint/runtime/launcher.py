"""Launch N ranks with torchrun and bring back rank 0's result — or a clear error.

torchrun (torch.distributed.run) is the engine, so the same command scales to several nodes with
its usual rendezvous flags. What this module adds is containment:

* torchrun runs in its own session and dies with us (PR_SET_PDEATHSIG); its workers run in
  sessions of their own (torchrun starts them with start_new_session) and die with torchrun
  (the worker sets PR_SET_PDEATHSIG too). On timeout every process of the tree is signalled by
  pid, TERM first, KILL after a grace period, so nothing is left behind.
* A harness exception is written by the failing rank to errors/rank<R>.json; torchrun stops the
  other ranks; we name the first rank that failed and its error.
* Progress files say where each rank was when a timeout hit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from placement_lint.errors import PlacementLintError, UsageError


class LaunchError(PlacementLintError):
    """The check could not run to completion (harness error, timeout, rendezvous failure)."""


@dataclass
class LaunchOptions:
    nproc: int
    backend: str = "auto"  # auto | nccl | gloo | sim
    timeout: float = 300.0
    nnodes: str | None = None
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    master_addr: str | None = None
    master_port: int | None = None
    extra_env: dict = field(default_factory=dict)
    keep_dir: str | None = None  # debugging: keep the spec/result/log folder here


def resolve_backend(backend: str, nproc: int) -> str:
    """auto: NCCL when there is a CUDA device per rank, else gloo. Checks availability."""
    import torch
    import torch.distributed as dist

    if backend == "auto":
        ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        backend = "nccl" if ngpu >= nproc and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        if not dist.is_nccl_available():
            raise UsageError("--backend nccl: this torch build has no NCCL support (try --backend gloo)")
        ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if ngpu < nproc:
            raise UsageError(f"--backend nccl needs one CUDA device per rank: --nproc {nproc} but "
                             f"{ngpu} CUDA device(s) visible (try --backend gloo)")
    elif backend == "gloo":
        if not dist.is_gloo_available():
            raise UsageError("--backend gloo: this torch build has no gloo support")
    elif backend != "sim":
        raise UsageError(f"unknown backend {backend!r}: expected auto, nccl, gloo or sim")
    return backend


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("localhost",) else "127.0.0.1", port))
        except OSError:
            return True
    return False


def torchrun_command(opts: LaunchOptions, spec_path: str) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(opts.nproc),
           "--max-restarts", "0", "--monitor-interval", "0.1"]
    multinode = opts.nnodes not in (None, "1", "1:1")
    if opts.nnodes:
        cmd += ["--nnodes", str(opts.nnodes)]
    if opts.node_rank is not None:
        cmd += ["--node-rank", str(opts.node_rank)]
    if opts.rdzv_endpoint:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", opts.rdzv_endpoint]
    elif opts.master_addr or opts.master_port:
        cmd += ["--master-addr", opts.master_addr or "127.0.0.1", "--master-port",
                str(opts.master_port or 29500)]
    elif not multinode:
        # an explicit free port rather than --standalone: the error for a taken port is then
        # ours to word, and the port is known for the message
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    cmd += ["-m", "placement_lint.runtime.worker", "--spec", spec_path]
    return cmd


def _children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc), parents first."""
    if not os.path.isdir("/proc"):
        return [pid]
    kids = _children_of()
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """TERM the whole tree (torchrun forwards it to its workers), KILL what survives."""
    pids = process_tree(proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids if p != proc.pid):
        proc.poll()
        time.sleep(0.05)
    # workers may have been started after the snapshot: look again before the hard kill
    pids = list(dict.fromkeys(pids + process_tree(proc.pid)))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def _pdeathsig_term():
    # runs in the child between fork and exec: a dying launcher takes torchrun with it
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))
    except OSError:
        pass


def launch(spec: dict, opts: LaunchOptions) -> dict:
    """Run `spec` (see worker.py) on opts.nproc ranks; return rank 0's result dict.

    The launch's folder (spec, result, progress, the log, and torchrun's own `torchelastic_*`
    folders: TMPDIR points into it) is removed after a successful launch; after a failure it is
    kept, because the error names its log. `--keep-dir` keeps everything."""
    backend = resolve_backend(opts.backend, opts.nproc)
    tmp = tempfile.mkdtemp(prefix="placement-lint-") if not opts.keep_dir else opts.keep_dir
    os.makedirs(tmp, exist_ok=True)
    result = _launch_in(tmp, backend, spec, opts)
    if not opts.keep_dir:
        shutil.rmtree(tmp, ignore_errors=True)
        result.pop("log", None)
    return result


def _launch_in(tmp: str, backend: str, spec: dict, opts: LaunchOptions) -> dict:
    spec = dict(spec)
    spec.update({
        "backend": backend,
        "timeout": opts.timeout,
        "result": os.path.join(tmp, "result.json"),
        "errors": os.path.join(tmp, "errors"),
        "progress": os.path.join(tmp, "progress"),
    })
    spec.setdefault("cwd", os.getcwd())
    for folder in (spec["errors"], spec["progress"]):
        # a reused --keep-dir must not report the previous launch's errors or progress
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
    for stale in (spec["result"],):
        if os.path.exists(stale):
            os.remove(stale)
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w") as fh:
        json.dump(spec, fh)
    if opts.rdzv_endpoint:
        host, _, port = opts.rdzv_endpoint.rpartition(":")
        if (opts.node_rank in (None, 0)) and host in ("localhost", "127.0.0.1", "") and port.isdigit() \
                and _port_in_use(host or "127.0.0.1", int(port)):
            raise UsageError(f"--rdzv-endpoint {opts.rdzv_endpoint}: port {port} is already in use "
                             "(another job? pick a free port or drop the flag)")
    if backend == "sim":
        cmd = [sys.executable, "-m", "placement_lint.runtime.worker", "--spec", spec_path]
        spec_env = {"PLACEMENT_LINT_SIM_WORLD": str(opts.nproc)}
    else:
        cmd = torchrun_command(opts, spec_path)
        spec_env = {}
    env = dict(os.environ)
    env.update(spec_env)
    env.update(opts.extra_env)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TMPDIR"] = tmp  # torchrun's torchelastic_* folders go with the launch's folder
    env.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    # the worker must import this very placement_lint, wherever the user runs from
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    log_path = os.path.join(tmp, "launch.log")
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=spec["cwd"],
                                start_new_session=True, preexec_fn=_pdeathsig_term)
        try:
            rc = _wait_with_heartbeat(proc, opts.timeout, spec["progress"], opts.nproc)
        except subprocess.TimeoutExpired:
            where = _progress_summary(spec["progress"])
            kill_tree(proc)
            raise LaunchError(
                f"the check did not finish within --timeout {opts.timeout:g}s (a hang: e.g. a mismatched "
                f"collective or a rank waiting for a peer); all {opts.nproc} rank(s) were terminated."
                + (f"\n  last known state: {where}" if where else "")
                + f"\n  log: {log_path}") from None
        except BaseException:
            kill_tree(proc)  # Ctrl-C: same containment
            raise
    seconds = time.monotonic() - t0
    if rc != 0 or not os.path.exists(spec["result"]):
        raise LaunchError(_failure_message(spec, rc, log_path, opts))
    with open(spec["result"]) as fh:
        result = json.load(fh)
    if result.get("refused"):  # --backend sim: the code asked for its rank at run time
        raise UsageError(result["refused"])
    result["launch_seconds"] = round(seconds, 3)
    result["log"] = log_path
    return result


def _wait_with_heartbeat(proc, timeout: float, progress_dir: str, nproc: int) -> int:
    """proc.wait(timeout), saying every heartbeat period what each rank is doing (a long
    launch without a word looks hung, in a terminal and in a CI log alike)."""
    from placement_lint.progress import heartbeat_period

    period = heartbeat_period()
    if not period or period <= 0:
        return proc.wait(timeout=timeout)
    t0 = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        try:
            return proc.wait(timeout=min(period, left))
        except subprocess.TimeoutExpired:
            if time.monotonic() - t0 >= timeout:
                raise
            state = _progress_summary(progress_dir) or "starting (torch import, process group)"
            sys.stderr.write(f"placement-lint: still running ({time.monotonic() - t0:.0f} s, {nproc} rank(s)): "
                             f"{state}\n")
            sys.stderr.flush()


def _progress_summary(folder: str) -> str:
    parts = []
    try:
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name)) as fh:
                parts.append(f"{name[:-4]}: {fh.read().strip()}")
    except OSError:
        pass
    return "; ".join(parts)


def _tail(path: str, n: int = 25) -> str:
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    lines = [ln for ln in lines if "Failed to initialize NumPy" not in ln and "_conversion_method_template" not in ln]
    return "\n".join(lines[-n:])


def _failure_message(spec: dict, rc: int, log_path: str, opts: LaunchOptions) -> str:
    errs = []
    try:
        for name in os.listdir(spec["errors"]):
            with open(os.path.join(spec["errors"], name)) as fh:
                errs.append(json.load(fh))
    except (OSError, ValueError):
        pass
    if errs:
        errs.sort(key=lambda e: e.get("time", 0))
        first = errs[0]
        others = [e["rank"] for e in errs[1:]]
        msg = (f"rank {first['rank']} raised {first['type']}: {first['message']}"
               + (f" (in harness {first['harness']})" if first.get("harness") else "")
               + f"; all ranks were stopped"
               + (f" (ranks {others} failed afterwards)" if others else "")
               + "\n" + _indent(first.get("traceback", "").rstrip()))
        return msg
    log = _tail(log_path)
    low = log.lower()
    if "address already in use" in low or "eaddrinuse" in low:
        return (f"rendezvous failed: the port is already in use ({opts.rdzv_endpoint or 'chosen port'}); "
                f"pick another --rdzv-endpoint/--master-port\n{_indent(log)}")
    if "nccl" in low and ("unhandled system error" in low or "no cuda" in low or "invalid device" in low):
        return f"NCCL could not start (rc {rc}); check the GPUs and drivers or use --backend gloo\n{_indent(log)}"
    return f"the ranks exited with code {rc} without a result\n{_indent(log)}\n  log: {log_path}"


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.splitlines())
