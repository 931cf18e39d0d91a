"""Runtime-checker tests. Skipped as a whole when torch (with torch.distributed) is missing."""
import os
import sys
from pathlib import Path

import pytest

try:
    import torch  # noqa: F401
    import torch.distributed as _dist

    _HAVE_TORCH = _dist.is_available()
    _REASON = "" if _HAVE_TORCH else "torch.distributed is not available in this torch build"
except ImportError:
    _HAVE_TORCH = False
    _REASON = "torch is not installed (pip install placement-lint[runtime]): runtime checker tests skipped"

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "multiprocess: launches real ranks with torchrun (gloo, several seconds)")
    config.addinivalue_line("markers", "cuda: needs CUDA GPUs and NCCL")
    config.addinivalue_line("markers", "torch_free: runs without torch")


def pytest_collection_modifyitems(config, items):
    if _HAVE_TORCH:
        return
    skip = pytest.mark.skip(reason=_REASON)
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.fspath).startswith(here) and "torch_free" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def root() -> Path:
    return ROOT


def run_cli(args, cwd=ROOT, env_extra=None, timeout=300):
    import subprocess

    env = dict(os.environ)
    env["PLACEMENT_LINT_QUIET"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "placement_lint", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
