"""Launch N ranks with torchrun and bring back rank 0's result — or a clear error.

torchrun (torch.distributed.run) is the engine, so the same command scales to several nodes with
its usual rendezvous flags. What this module adds is containment:

* torchrun runs in its own session and dies with us (PR_SET_PDEATHSIG); each rank is a
  supervisor and its forked rank (worker.supervise) in a process group of their own, which also
  holds whatever the harness starts. On timeout every process of the tree is signalled by pid,
  TERM first, KILL after a grace period; on every outcome _sweep kills what is left (the rank
  groups, processes with the launch's token, orphans adopted as a subreaper) and reaps it.
* A harness exception is written by the failing rank to errors/rank<R>.json, how each rank
  ended by its supervisor to exits/rank<R>.json; torchrun stops the other ranks; we name the
  first rank that failed, and how, in one line.
* Progress files say where each rank was when a timeout hit.
* The launch folder goes at the end unless --keep-dir.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
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


def _port_taken(host: str | None, port: int) -> bool:
    """Whether `port` is already taken on this machine, asked only where `host` is this machine
    (other nodes' ports are theirs to check). The rendezvous store listens on every interface,
    so a listener on any address counts; a TIME_WAIT leftover does not (SO_REUSEADDR, as the
    store itself)."""
    host = host or "127.0.0.1"
    if host not in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::"):
        try:
            with socket.create_server((host, 0)):
                pass
        except OSError:
            return False  # not an address of this machine (or unresolvable): not ours to check
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((addr, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def check_ports(opts: LaunchOptions) -> None:
    """A taken rendezvous port is one line naming it, before torchrun starts (exit 2)."""
    if opts.node_rank not in (None, 0):
        return  # only node 0 listens
    if opts.rdzv_endpoint:
        host, _, port = opts.rdzv_endpoint.rpartition(":")
        if port.isdigit() and _port_taken(host.strip("[]"), int(port)):
            raise UsageError(f"--rdzv-endpoint {opts.rdzv_endpoint}: port {port} is already in use "
                             "(another job? pick a free port or drop the flag)")
    elif opts.master_port and _port_taken(opts.master_addr, opts.master_port):
        raise UsageError(f"--master-port {opts.master_port}: port {opts.master_port} is already in use "
                         "(another job? pick a free port or drop the flag)")


def rendezvous_port(cmd: list[str]) -> str:
    """The port a torchrun command listens on (for the message when it turns out taken)."""
    for flag in ("--rdzv-endpoint", "--master-port"):
        if flag in cmd:
            return cmd[cmd.index(flag) + 1].rpartition(":")[2]
    return "29500"


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


def _proc_stats():
    """(pid, ppid, pgid, session, state) of every process (Linux /proc; nothing elsewhere)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            fields = stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and parentheses
            yield int(entry), int(fields[1]), int(fields[2]), int(fields[3]), fields[0]
        except (OSError, IndexError, ValueError):
            continue


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`, the calling process excepted."""
    return [pid for pid, _pp, g, _sid, state in _proc_stats() if g == pgid and state != "Z" and pid != os.getpid()]


def _children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid, ppid, _pgid, _sid, _state in _proc_stats():
        kids.setdefault(ppid, []).append(pid)
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

    The launch's folder (spec, result, progress, the logs, and torchrun's own `torchelastic_*`
    folders: TMPDIR points into it) is removed at the end whatever the outcome; `--keep-dir`
    keeps everything, and only then does an error name a log."""
    backend = resolve_backend(opts.backend, opts.nproc)
    if backend != "sim":
        check_ports(opts)
    tmp = tempfile.mkdtemp(prefix="placement-lint-") if not opts.keep_dir else opts.keep_dir
    try:
        os.makedirs(tmp, exist_ok=True)
        result = _launch_in(tmp, backend, spec, opts)
    finally:
        if not opts.keep_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    if not opts.keep_dir:
        result.pop("log", None)
    return result


_TOKEN_VAR = "PLACEMENT_LINT_LAUNCH"  # inherited by every process of a launch, see _sweep


def _launch_in(tmp: str, backend: str, spec: dict, opts: LaunchOptions) -> dict:
    spec = dict(spec)
    spec.update({
        "backend": backend,
        "timeout": opts.timeout,
        "result": os.path.join(tmp, "result.json"),
        **{name: os.path.join(tmp, name) for name in ("errors", "progress", "exits", "pids", "logs")},
    })
    spec.setdefault("cwd", os.getcwd())
    for name in ("errors", "progress", "exits", "pids", "logs"):
        # a reused --keep-dir must not report the previous launch's errors or progress
        shutil.rmtree(spec[name], ignore_errors=True)
        os.makedirs(spec[name], exist_ok=True)
    for stale in (spec["result"],):
        if os.path.exists(stale):
            os.remove(stale)
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w") as fh:
        json.dump(spec, fh)
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
    env[_TOKEN_VAR] = token = uuid.uuid4().hex
    env.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    # the worker must import this very placement_lint, wherever the user runs from
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    log_path = os.path.join(tmp, "launch.log")
    kept = bool(opts.keep_dir)
    t0 = time.monotonic()
    rc = _run_contained(cmd, env, spec, log_path, opts, token)
    seconds = time.monotonic() - t0
    if rc != 0 or not os.path.exists(spec["result"]):
        raise _failure(spec, rc, log_path, kept, rendezvous_port(cmd) if backend != "sim" else None)
    with open(spec["result"]) as fh:
        result = json.load(fh)
    if result.get("refused"):  # --backend sim: the code asked for its rank at run time
        raise UsageError(result["refused"])
    result["launch_seconds"] = round(seconds, 3)
    result["log"] = log_path
    return result


def _run_contained(cmd: list[str], env: dict, spec: dict, log_path: str, opts: LaunchOptions, token: str) -> int:
    """Run the launch command to its end or its timeout; whatever the outcome, nothing it started
    is left running (see _sweep). Returns its exit code."""
    before = {pid for pid, ppid, *_rest in _proc_stats() if ppid == os.getpid()}
    with _subreaper(), open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=spec["cwd"],
                                start_new_session=True, preexec_fn=_pdeathsig_term)
        try:
            return _wait_with_heartbeat(proc, opts.timeout, spec["progress"], opts.nproc)
        except subprocess.TimeoutExpired:
            where = _progress_summary(spec["progress"])
            kill_tree(proc)
            raise LaunchError(
                f"the check did not finish within --timeout {opts.timeout:g}s (a hang: e.g. a mismatched "
                f"collective or a rank waiting for a peer); all {opts.nproc} rank(s) were terminated"
                + (f"; last known state: {where}" if where else "")
                + _log_hint(spec, bool(opts.keep_dir), None)) from None
        except BaseException:
            kill_tree(proc)  # Ctrl-C: same containment
            raise
        finally:
            _sweep(spec["pids"], proc.pid, token, before)  # still a subreaper: orphans are ours to reap


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@contextlib.contextmanager
def _subreaper():
    """For the launch, processes orphaned inside it (a harness's children once their rank is gone)
    become this process's children instead of init's: _sweep finds and reaps them (an init that
    never reaps, as in many containers, would keep them as zombies). The old setting is restored."""
    import ctypes

    libc = _libc()
    prev = ctypes.c_int(0)
    # PR_GET_CHILD_SUBREAPER 37, PR_SET_CHILD_SUBREAPER 36 (Linux >= 3.4)
    ok = libc is not None and libc.prctl(37, ctypes.byref(prev), 0, 0, 0) == 0 \
        and libc.prctl(36, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if ok:
            libc.prctl(36, prev.value, 0, 0, 0)


def _sweep(pids_dir: str, leader: int, token: str, before: set[int]) -> None:
    """Kill what a launch left running, whatever its outcome, and reap what was orphaned to us.

    Left running can be: members of a rank's process group (a harness's children stay in their
    rank's group; the supervisor kills them too, this covers a supervisor that was killed itself)
    or of torchrun's group; a process whose environment carries this launch's token (a child
    that left its group with setsid); an orphan adopted by this process (see _subreaper) in
    another session than ours (every process of a launch is: torchrun starts in its own) that was
    not our child before the launch (`before`: the caller's own children are left alone)."""
    me, my_sid = os.getpid(), os.getsid(0)
    groups = {leader}
    try:
        for name in os.listdir(pids_dir):
            with open(os.path.join(pids_dir, name)) as fh:
                groups.add(int(json.load(fh)["pgid"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    groups.discard(os.getpgrp())  # never our own

    def adopted(pid: int, ppid: int, sid: int) -> bool:
        # torchrun itself is Popen's to reap
        return ppid == me and sid != my_sid and pid != leader and pid not in before

    marker = f"{_TOKEN_VAR}={token}".encode()
    for pid, ppid, pgid, sid, state in _proc_stats():
        if pid == me or state == "Z":
            continue
        hit = pgid in groups or adopted(pid, ppid, sid)
        if not hit:
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    hit = marker in fh.read().split(b"\0")
            except OSError:
                continue  # another user's process, or gone
        if hit:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    # reap the adopted ones (the killed ones once dead): an init that never reaps, as in many
    # containers, would otherwise keep them as zombies
    deadline = time.monotonic() + 3.0
    while True:
        left = []
        for pid, ppid, _pgid, sid, _state in _proc_stats():
            if not adopted(pid, ppid, sid):
                continue
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    left.append(pid)
            except ChildProcessError:
                pass
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _log_hint(spec: dict, kept: bool, rank: int | None) -> str:
    if not kept:
        return "; rerun with --keep-dir DIR to keep the ranks' logs"
    if rank is not None and os.path.exists(os.path.join(spec["logs"], f"rank{rank}.log")):
        return f"; log: {os.path.join(spec['logs'], f'rank{rank}.log')}"
    launch_log = os.path.join(os.path.dirname(spec["logs"]), "launch.log")  # torchrun's (sim: the worker's)
    if rank is None:
        return f"; logs: {launch_log} and {os.path.join(spec['logs'], 'rank<R>.log')}"
    return f"; log: {launch_log}"


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


def _progress_summary(folder: str, only: str | None = None) -> str:
    parts = []
    try:
        for name in sorted(os.listdir(folder)):
            if only is not None:
                if name == f"{only}.txt":
                    with open(os.path.join(folder, name)) as fh:
                        return fh.read().strip()
                continue
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


# what a rank sees when a peer died first: a consequence, never the cause
_PEER_LOST = re.compile(r"connection (reset|closed|refused)|(reset|closed) by peer|broken pipe|econnreset|epipe",
                        re.IGNORECASE)


def _read_records(folder: str) -> list[dict]:
    out = []
    try:
        names = os.listdir(folder)
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(folder, name)) as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return out


def _first_failure(spec: dict) -> tuple[dict | None, list[int]]:
    """The rank whose failure started it all, and the ranks that failed after it.

    A rank that raised is described by its error (its own exit comes later); a rank that died
    without raising (signal, os._exit) by the exit record its supervisor wrote. A lost peer
    connection or a SIGTERM is what the others see when one rank is gone, so such failures come
    last; within each kind the earliest wins."""
    by_rank: dict[int, dict] = {}
    for rec in _read_records(spec["exits"]):
        by_rank[rec["rank"]] = dict(rec, kind="exit")
    for rec in _read_records(spec["errors"]):
        by_rank[rec["rank"]] = dict(rec, kind="error")  # the error explains the exit

    def consequence(rec: dict) -> bool:
        if rec["kind"] == "error":
            return bool(_PEER_LOST.search(rec.get("message", "")))
        return rec.get("signal") == signal.SIGTERM

    order = sorted(by_rank.values(), key=lambda r: (consequence(r), r.get("time", 0.0)))
    if not order:
        return None, []
    return order[0], sorted(r["rank"] for r in order[1:])


def _describe(rec: dict, spec: dict) -> str:
    rank = rec["rank"]
    if rec["kind"] == "error":
        lines = [ln for ln in str(rec.get("message", "")).splitlines() if ln.strip()]
        text = (lines[0] + (" ..." if len(lines) > 1 else "")) if lines else ""
        return (f"rank {rank} raised {rec['type']}" + (f": {text}" if text else "")
                + (f" at {rec['where']}" if rec.get("where") else "")
                + (f" (in harness {rec['harness']})" if rec.get("harness") else ""))
    if "signal" in rec:
        try:
            name = signal.Signals(rec["signal"]).name
        except ValueError:
            name = f"signal {rec['signal']}"
        why = {"SIGSEGV": " (a crash in native code)", "SIGBUS": " (a crash in native code)",
               "SIGABRT": " (an abort, e.g. a failed check in native code)",
               "SIGKILL": " (kill -9, or the kernel's out-of-memory killer)"}.get(name, "")
        text = f"rank {rank} was killed by {name}{why}"
    else:
        text = f"rank {rank} exited with code {rec['code']} (os._exit or a native exit: no Python exception)"
    state = _progress_summary(spec["progress"], only=f"rank{rank}")
    return text + (f" (last step: {state})" if state else "")


def _failure(spec: dict, rc: int, log_path: str, kept: bool, port: str | None) -> PlacementLintError:
    """One line saying why a launch gave no result: the first rank to fail and how."""
    first, later = _first_failure(spec)
    if first is None and spec["backend"] == "sim" and rc:
        # no supervisor there: the simulation is our own child, its status is rc
        first = {"rank": 0, "kind": "exit", **({"signal": -rc} if rc < 0 else {"code": rc})}
    if first is not None:
        if first["kind"] == "error" and first.get("usage"):
            return UsageError(first["message"])
        return LaunchError(_describe(first, spec) + "; all ranks were stopped"
                           + (f" (rank(s) {', '.join(map(str, later))} failed afterwards)" if later else "")
                           + _log_hint(spec, kept, first["rank"]))
    log = _tail(log_path)
    low = log.lower()
    if "address already in use" in low or "eaddrinuse" in low:
        # taken between our check and torchrun's start (or by a host we could not check)
        return UsageError(f"port {port} is already in use: the rendezvous could not start; pick a free "
                          "--master-port or --rdzv-endpoint")
    if "nccl" in low and ("unhandled system error" in low or "no cuda" in low or "invalid device" in low):
        return LaunchError(f"NCCL could not start (rc {rc}); check the GPUs and drivers or use --backend gloo"
                           f"\n{_indent(log)}")
    # nothing of ours says why: torchrun's own words are all there is
    return LaunchError(f"torchrun exited with code {rc} before any rank reported a result"
                       + _log_hint(spec, kept, None) + f"\n{_indent(log)}")


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.splitlines())
