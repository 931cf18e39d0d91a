"""The runtime failure matrix: every way a launch can go wrong, through the real CLI on real gloo
ranks (2 ranks). Each case asserts the exit code, the one-line message, that stderr holds no
Python traceback, and that nothing is left: no process (each harness writes its child's pid; one
child stays in its rank's process group, the other leaves it with setsid) and nothing in TMPDIR.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import ROOT

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc: Linux"),
]

PROG = "tests/runtime/programs/failures.py"
CROWDED = "gloo ranks on"  # the oversubscription warning, which a 1-core machine gives every run


class Box:
    """One CLI run's TMPDIR and the folder where its harnesses write their children's pids."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path / "tmp"
        self.pids = tmp_path / "pids"
        self.tmp.mkdir()
        self.pids.mkdir()

    def confirm(self, harness, *extra, cpus=None, timeout=240):
        env = dict(os.environ, TMPDIR=str(self.tmp), PL_TEST_PIDS=str(self.pids), PLACEMENT_LINT_QUIET="1",
                   PYTHONWARNINGS="ignore")
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "placement_lint", "confirm", PROG, "--harness", f"{PROG}:{harness}",
                               "--nproc", "2", "--backend", "gloo", *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=pin)
        proc.seconds = time.monotonic() - t0
        return proc

    def assert_nothing_left(self, children: int):
        assert sorted(p.name for p in self.tmp.iterdir()) == []
        pids = {p.name: int(p.read_text()) for p in self.pids.iterdir()}
        # the harness did run and start its children: otherwise "none survived" proves nothing
        assert len(pids) == children, sorted(pids)
        alive = {name: pid for name, pid in pids.items() if _exists(pid)}
        assert alive == {}, f"left running: {alive}"


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # a zombie too: the launcher must have reaped what was orphaned to it


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def error_line(proc, *warnings: str) -> str:
    """stderr is exactly one `placement-lint: error:` line (after the warnings named)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if CROWDED not in ln or CROWDED in warnings]
    assert len(lines) == 1 + len(warnings), proc.stderr
    for line, w in zip(lines, warnings):
        assert line.startswith("placement-lint: warning: ") and w in line, line
    assert lines[-1].startswith("placement-lint: error: "), proc.stderr
    return lines[-1]


def test_success_with_verify_fix_leaves_nothing(box):
    """Three launches (reference, check, rerun with the fix): every folder and child goes."""
    proc = box.confirm("ok", "--verify-fix")
    assert proc.returncode == 1, proc.stderr  # the planted finding, confirmed
    assert "DTP101" in proc.stdout and "runtime: confirmed" in proc.stdout
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr, proc.stderr
    box.assert_nothing_left(children=1 + 2 + 2)


@pytest.mark.parametrize("harness, got", [("returns_none", "None")])
def test_a_harness_returning_no_module_is_exit_2(box, harness, got):
    proc = box.confirm(harness)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert f"harness {PROG}:{harness} returned {got}, not an nn.Module" in line, line
    assert "rank" not in line  # the user's mistake, not a rank's crash
    box.assert_nothing_left(children=0)


def test_harness_raising_names_the_rank_and_where(box):
    """With --reference: the reference run's folder goes as well, after a failed check."""
    proc = box.confirm("raises", "--reference")
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    raise_line = next(i for i, text in enumerate((ROOT / PROG).read_text().splitlines(), 1)
                      if "planted failure on rank 1" in text)
    assert f"rank 1 raised ValueError: planted failure on rank 1 at {PROG}:{raise_line}" in line, line
    assert "rerun with --keep-dir" in line
    box.assert_nothing_left(children=1 + 2)


def test_a_rank_killed_by_a_signal_is_named(box):
    proc = box.confirm("killed")
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert "rank 1 was killed by SIGKILL" in line, line
    assert "by peer" not in line.lower()  # what rank 0 saw is a consequence, not the cause
    box.assert_nothing_left(children=2)


def test_a_rank_leaving_through_os_exit_is_named_with_its_log_when_kept(box, tmp_path):
    keep = tmp_path / "keep"
    proc = box.confirm("exits", "--keep-dir", str(keep))
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert "rank 1 exited with code 3 (os._exit" in line, line
    log = keep / "logs" / "rank1.log"
    assert line.endswith(f"; log: {log}") and log.is_file(), line
    box.assert_nothing_left(children=2)


def test_a_hang_times_out_and_leaves_nothing(box):
    """--timeout counts from the launch, start-up included (20 s on a loaded machine or with a
    CUDA torch): a timeout that ended the run before the harness started its children proves
    nothing about them, so the run is repeated with a longer one."""
    for timeout in (12, 30, 60):
        proc = box.confirm("hangs", "--timeout", str(timeout))
        assert proc.returncode == 2, proc.stderr
        line = error_line(proc)
        assert f"did not finish within --timeout {timeout}s" in line and "rank1: " in line, line
        assert proc.seconds < timeout + 25
        if any(box.pids.iterdir()):
            break
    box.assert_nothing_left(children=2)


def test_a_taken_master_port_is_one_line_with_the_port(box):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = box.confirm("ok", "--master-port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert f"--master-port {port}: port {port} is already in use" in error_line(proc)
    box.assert_nothing_left(children=0)  # refused before any rank started


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_more_ranks_than_cores_warns_once(box):
    """Pinned to one core, 2 ranks: a warning (not an error); the run goes on (here to a harness
    that returns its loss, a DTensor, instead of the model)."""
    proc = box.confirm("returns_loss", cpus={sorted(os.sched_getaffinity(0))[0]})
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc, CROWDED)
    assert "--nproc 2: 2 gloo ranks on 1 CPU core(s)" in proc.stderr
    assert f"harness {PROG}:returns_loss returned a DTensor, not an nn.Module" in line, line
    box.assert_nothing_left(children=0)


@pytest.mark.parametrize("spec, message", [
    ("{d}/nope.py:harness", "harness file not found: {d}/nope.py"),
    ("{d}/marks.py:harness", "marks.py defines no top-level 'harness'"),
    ("{d}/marks.py:inner", "marks.py defines no top-level 'inner'"),  # a method, not a module function
    ("{d}/broken.py:harness", "syntax error at {d}/broken.py:2"),
])
def test_a_bad_harness_spec_is_refused_before_any_process_starts(box, tmp_path, spec, message):
    """Checked in the parent, statically: the harness file is never executed (it would leave
    a marker), no rank starts (no torchelastic folder), one line, exit 2."""
    d = tmp_path / "h"
    d.mkdir()
    marker = tmp_path / "executed"
    (d / "marks.py").write_text(f"open({str(marker)!r}, 'w').close()\n\n\nclass C:\n    def inner(self, ctx):\n"
                                "        return None\n\n\nif __name__ == '__main__':\n    pass\n")
    (d / "broken.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef harness(ctx:\n")
    env = dict(os.environ, TMPDIR=str(box.tmp), PLACEMENT_LINT_QUIET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "placement_lint", "confirm", PROG, "--harness", spec.format(d=d),
                           "--nproc", "2", "--backend", "gloo"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message.format(d=d) in error_line(proc)
    assert not marker.exists()
    box.assert_nothing_left(children=0)


def test_check_harness_reads_bindings_under_if_and_try_and_imports_nothing(tmp_path, monkeypatch):
    """Statically: a function defined under `if`/`try` counts, one only inside a function or a
    class does not, `import *` cannot be judged; a module spec's packages are not imported."""
    from placement_lint.errors import UsageError
    from placement_lint.runtime.harness import check_harness

    marker = tmp_path / "executed"
    pkg = tmp_path / "hpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "cond.py").write_text("import os\nif os.environ.get('X'):\n    def harness(ctx):\n        return 1\nelse:\n"
                                 "    try:\n        from somewhere import harness\n    except ImportError:\n"
                                 "        harness = None\n\n\ndef outer():\n    def nested(ctx):\n        pass\n")
    (pkg / "star.py").write_text("from somewhere import *\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_harness("hpkg.cond:harness", tmp_path)
    check_harness(f"{pkg / 'cond.py'}:harness", tmp_path)
    check_harness("hpkg.star:anything", tmp_path)
    with pytest.raises(UsageError, match="defines no top-level 'nested'"):
        check_harness("hpkg.cond:nested", tmp_path)
    with pytest.raises(UsageError, match="cannot import harness module 'hpkg.nope': no such module"):
        check_harness("hpkg.nope:harness", tmp_path)
    assert not marker.exists()
    assert "hpkg" not in sys.modules


def test_failure_attribution_prefers_the_cause_to_its_consequences(tmp_path):
    """Without processes: rank 0's lost connection came first in time (it can: rank 1's sockets
    close before its parent learns it died) but rank 1's death is the cause; a taken port found
    only in torchrun's log is still one line with the port."""
    import json

    from placement_lint.errors import UsageError
    from placement_lint.runtime.launcher import LaunchError, _failure

    spec = {name: str(tmp_path / name) for name in ("errors", "exits", "progress", "logs")}
    spec["backend"] = "gloo"
    for name in ("errors", "exits", "progress", "logs"):
        os.makedirs(spec[name])
    (tmp_path / "errors" / "rank0.json").write_text(json.dumps(
        {"rank": 0, "type": "DistBackendError", "message": "Connection reset by peer", "time": 10.0}))
    (tmp_path / "exits" / "rank1.json").write_text(json.dumps({"rank": 1, "signal": int(signal.SIGSEGV), "time": 10.5}))
    err = _failure(spec, 1, str(tmp_path / "none.log"), False, "29500")
    assert isinstance(err, LaunchError)
    assert str(err).startswith("rank 1 was killed by SIGSEGV (a crash in native code); all ranks were stopped "
                               "(rank(s) 0 failed afterwards)"), str(err)
    for name in ("errors", "exits"):
        for f in (tmp_path / name).iterdir():
            f.unlink()
    log = tmp_path / "launch.log"
    log.write_text("torch.distributed.DistNetworkError: ... EADDRINUSE: address already in use\n")
    err = _failure(spec, 1, str(log), False, "29533")
    assert isinstance(err, UsageError) and "port 29533 is already in use" in str(err) and "\n" not in str(err)
