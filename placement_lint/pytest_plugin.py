"""pytest plugin: `pytest --placement-monitor` runs a project's existing distributed tests under
placement-lint's runtime monitor and reports the verdicts at the end of the session.

Registered as a `pytest11` entry point (`placement_lint`); it does nothing unless the option is
given. With it, every process that takes part watches its DTensor conversions with a
PlacementMonitor: the pytest process itself, processes it forks (they inherit the monitor) and
processes started fresh (`torch.multiprocessing.spawn`, a `torchrun` subprocess: a
`sitecustomize` on `PYTHONPATH` installs the monitor when `PLACEMENT_LINT_MONITOR_DIR` is set).
Each process writes its payload (communication-free `collect()`) when it destroys its process
group, or at exit, tagged with the test that was running, its rank and world size; at the end of
the session the payloads of each process group are judged together (runtime/verdicts.py) and the
sites whose gradient contradicts its label are listed. No finding changes a test's outcome: the
report is informational (exit code unchanged).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

ENV_DIR = "PLACEMENT_LINT_MONITOR_DIR"
_BAD = ("confirmed", "mixed", "double-count")
_state: dict = {}
_lock = threading.Lock()

_SITECUSTOMIZE = '''\
# written by placement-lint's pytest plugin: watch DTensor conversions in this process too
import os
if os.environ.get("PLACEMENT_LINT_MONITOR_DIR"):
    try:
        from placement_lint.pytest_plugin import install
        install()
    except Exception as exc:  # never break the process under test
        import sys
        sys.stderr.write(f"placement-lint: monitor not installed in pid {os.getpid()}: {exc}\\n")
'''


def pytest_addoption(parser) -> None:
    group = parser.getgroup("placement-lint")
    group.addoption("--placement-monitor", action="store_true", default=False,
                    help="run the tests under placement-lint's runtime monitor (every rank of every process "
                         "group they start) and report gradient-label verdicts at the end")


def pytest_configure(config) -> None:
    if not config.getoption("--placement-monitor", default=False):
        return
    out = tempfile.mkdtemp(prefix="placement-lint-pytest-")
    site = os.path.join(out, "site")
    os.makedirs(site)
    with open(os.path.join(site, "sitecustomize.py"), "w") as fh:
        fh.write(_SITECUSTOMIZE)
    pkg_root = str(Path(__file__).resolve().parents[1])
    os.environ[ENV_DIR] = os.path.join(out, "payloads")
    os.makedirs(os.environ[ENV_DIR])
    os.environ["PYTHONPATH"] = os.pathsep.join([site, pkg_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    config._placement_lint_dir = out
    install()


def install() -> None:
    """Watch this process: a PlacementMonitor for its lifetime, a payload written when its process
    group is destroyed (and at exit). Forked children inherit both and write their own."""
    if _state.get("pid") == os.getpid():
        return
    import torch.distributed as dist

    from placement_lint.runtime import monitor as monitor_mod
    from placement_lint.runtime.monitor import PlacementMonitor

    if monitor_mod._active is not None and _state.get("monitor") is not monitor_mod._active:
        return  # a monitor of placement-lint confirm already runs here
    if _state.get("monitor") is None:
        mon = PlacementMonitor()
        mon.__enter__()
        _state["monitor"] = mon
        if not _state.get("patched"):
            orig = dist.destroy_process_group

            def destroy_process_group(*args, **kwargs):
                dump()
                return orig(*args, **kwargs)

            dist.destroy_process_group = destroy_process_group
            _state["patched"] = True
        atexit.register(dump)
    _state["pid"] = os.getpid()


def dump() -> None:
    """Write this process's payload (if it saw a conversion) and start a fresh monitor."""
    folder = os.environ.get(ENV_DIR)
    mon = _state.get("monitor")
    if not folder or mon is None or not mon.sites:
        return
    import torch.distributed as dist

    with _lock:
        try:
            payload = mon.collect(None)
        except Exception as exc:  # noqa: BLE001 - the test's own failure must stay the story
            sys.stderr.write(f"placement-lint: payload of pid {os.getpid()} lost: {exc}\n")
            return
        group = ""
        if dist.is_available() and dist.is_initialized():
            payload["rank"], payload["world_size"] = dist.get_rank(), dist.get_world_size()
            group = os.environ.get("MASTER_PORT", "")  # the same in every rank of the group
        record = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0], "group": group,
                  "n": _state.get("dumps", 0), "payload": payload}
        _state["dumps"] = _state.get("dumps", 0) + 1
        path = os.path.join(folder, f"{os.getpid()}-{record['n']}.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(record, fh, default=str)
        os.replace(path + ".tmp", path)
        # the next process group of this process starts from a clean slate
        mon.sites.clear()


def verdicts(folder: str) -> list[dict]:
    """Rank payloads grouped by (test, process group, world size, dump index), judged together."""
    from placement_lint.runtime.verdicts import compute

    groups: dict[tuple, dict[int, dict]] = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            continue
        p = rec["payload"]
        key = (rec.get("test", ""), rec.get("group", ""), p.get("world_size", 1), rec.get("n", 0))
        groups.setdefault(key, {})[p.get("rank", 0)] = p
    out = []
    for (test, _group, world, _n), ranks in sorted(groups.items()):
        if len(ranks) < 2 or len(ranks) != world:
            out.append({"test": test, "world_size": world, "ranks": sorted(ranks), "sites": [], "incomplete": True})
            continue
        res = compute([ranks[r] for r in sorted(ranks)])
        out.append({"test": test, "world_size": world, "ranks": sorted(ranks), "sites": res["sites"]})
    return out


def pytest_sessionfinish(session, exitstatus) -> None:
    out = getattr(session.config, "_placement_lint_dir", None)
    if not out:
        return
    dump()
    mon = _state.pop("monitor", None)
    if mon is not None:
        mon.__exit__(None, None, None)
    try:
        session.config._placement_lint_results = verdicts(os.path.join(out, "payloads"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        os.environ.pop(ENV_DIR, None)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    results = getattr(config, "_placement_lint_results", None)
    if results is None:
        return
    tr = terminalreporter
    tr.section("placement-lint runtime monitor")
    judged = [r for r in results if not r.get("incomplete")]
    bad = [(r, s) for r in judged for s in r["sites"] if s["verdict"] in _BAD]
    sites = sum(len(r["sites"]) for r in judged)
    tr.write_line(f"{len(judged)} process group(s) judged, {sites} site(s), {len(bad)} with a gradient "
                  f"that contradicts its label" + (f"; {len(results) - len(judged)} group(s) incomplete or "
                                                   "single-rank (not judged)" if len(judged) < len(results) else ""))
    for r, s in bad:
        ev = s.get("evidence") or {}
        where = f" ({s['hook']} hook of `{s['module']}`)" if s.get("hook") in ("pre", "post") else ""
        path = s["path"]
        if os.path.isabs(path) and path.startswith(os.getcwd() + os.sep):
            path = os.path.relpath(path)
        tr.write_line(f"{path}:{s['line']}: {s['verdict']}: `{s['api']}`{where} on mesh dim "
                      f"`{ev.get('mesh_dim')}`, max rel diff {ev.get('max_rel_diff')} [{r['test'] or 'outside a test'}, "
                      f"{r['world_size']} ranks]")
