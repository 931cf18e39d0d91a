from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def strict_fast_parse(monkeypatch):
    """A failure of the fast front end itself raises in tests (a user's run falls back to LibCST)."""
    from placement_lint.analysis import fast_parse

    monkeypatch.setattr(fast_parse, "_STRICT", True)


@pytest.fixture
def lint_files(tmp_path, monkeypatch):
    """Write {name: source} into a temp project and lint it; returns the Report."""
    from placement_lint.config import load_config
    from placement_lint.engine import lint
    from placement_lint.findings import Confidence

    def run(files: dict[str, str], min_confidence: str = "low", **kw):
        for name, src in files.items():
            p = tmp_path / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(src)
        monkeypatch.chdir(tmp_path)
        config = load_config(tmp_path)
        config.min_confidence = Confidence.parse(min_confidence)
        return lint([tmp_path], config, use_cache=False, cwd=tmp_path, **kw)

    return run


def style_project(root: Path, variant: str = "moe_router", others: int = 0) -> Path:
    """A project (pyproject.toml) holding the fixture package `moe_router/` (a style's hook in
    styles.py, the plan entry applying it in model.py; `variant` "moe_router_fixed" for the fixed
    hook) and `others` unrelated modules: the shape of every cross-file integration test."""
    import shutil

    pkg = root / "moe_router"
    pkg.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    for name in ("__init__.py", "styles.py", "model.py"):
        shutil.copy(REPO / "fixtures" / variant / name, pkg / name)
    for i in range(others):
        (pkg / f"other{i}.py").write_text(f"import torch\n\n\ndef f{i}(x):\n    return torch.relu(x) * {i}\n")
    return root
