"""`pytest --placement-monitor`: a project's own distributed tests, which start their own process
groups (spawned and forked ranks), run under the monitor; the verdicts come at the end."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS = textwrap.dedent('''
    import os
    import socket

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp


    def _port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


    def _rank(rank, world, port, name):
        import importlib

        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Replicate

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        fixture = importlib.import_module(name)
        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
        torch.manual_seed(0)
        out = fixture.build(mesh)(*fixture.example_inputs())
        if isinstance(out, DTensor):
            out = out.full_tensor(grad_placements=[Replicate()])
        out.pow(2).sum().backward()
        dist.destroy_process_group()


    def test_spawned_buggy():
        mp.spawn(_rank, args=(2, _port(), "fixtures.tp_expert_matmul"), nprocs=2)


    def test_spawned_fixed():
        mp.spawn(_rank, args=(2, _port(), "fixtures.tp_expert_matmul_fixed"), nprocs=2)


    def test_forked_buggy():
        ctx = mp.get_context("fork")
        port = _port()
        procs = [ctx.Process(target=_rank, args=(r, 2, port, "fixtures.rowwise_bias")) for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0
''')


def test_plugin_reports_verdicts_of_the_ranks_the_tests_start(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "test_dist.py").write_text(TESTS)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    from importlib.metadata import entry_points

    installed = any(ep.value == "placement_lint.pytest_plugin" for ep in entry_points(group="pytest11"))
    load = [] if installed else ["-p", "placement_lint.pytest_plugin"]  # an editable install predating it
    cmd = [sys.executable, "-m", "pytest", "-q", *load, "--placement-monitor", "-p", "no:cacheprovider",
           str(tmp_path / "test_dist.py")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr  # verdicts never change the outcome
    assert "placement-lint runtime monitor" in out
    lines = [ln for ln in out.splitlines() if ": confirmed:" in ln]
    assert any("fixtures/tp_expert_matmul.py:33:" in ln and "test_spawned_buggy" in ln for ln in lines), out
    assert any("fixtures/rowwise_bias.py:38:" in ln and "test_forked_buggy" in ln for ln in lines), out
    assert not any("_fixed" in ln for ln in lines), out
    # without the option the plugin stays out of the way
    plain = subprocess.run([c for c in cmd if c != "--placement-monitor"], cwd=tmp_path, capture_output=True,
                           text=True, env=env, timeout=600)
    assert plain.returncode == 0 and "placement-lint runtime monitor" not in plain.stdout


def test_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]' in text and 'placement_lint = "placement_lint.pytest_plugin"' in text
