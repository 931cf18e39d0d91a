"""`placement-lint confirm` edges that need no launch."""
import pytest

from tests.runtime.conftest import run_cli


@pytest.mark.torch_free
def test_confirm_without_torch_exits_2_with_the_install_hint(tmp_path):
    # a sitecustomize that makes `import torch` fail, as on a machine without torch
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('No module named torch')\n"
        "sys.meta_path.insert(0, _Block())\n")
    import os

    proc = run_cli(["confirm", "fixtures/token_split.py", "--harness", "fixtures/harnesses/token_split.py:harness"],
                   env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 2
    assert ("placement-lint: error: the runtime checker needs torch: pip install placement-lint[runtime]"
            in proc.stderr), proc.stderr


def test_sim_refuses_code_that_asks_for_its_rank():
    proc = run_cli(["confirm", "fixtures/token_split.py", "--harness", "fixtures/harnesses/token_split.py:harness",
                    "--backend", "sim"])
    assert proc.returncode == 2
    assert "--backend sim cannot run code that asks for its rank" in proc.stderr
    assert "fixtures/token_split.py:35" in proc.stderr  # mesh.get_local_rank()
