"""Runtime checker: run a short forward/backward on a real mesh and turn findings into verdicts.

Nothing here imports torch at import time: the static CLI imports this package lazily (only for
`placement-lint confirm`) and a pre-commit hook must never pay for torch. The torch-bound pieces
(`PlacementMonitor`, the harness context, the worker) are loaded on first attribute access.
"""

from __future__ import annotations

TORCH_MISSING = "the runtime checker needs torch: pip install placement-lint[runtime]"

__all__ = ["PlacementMonitor", "HarnessContext", "TORCH_MISSING", "require_torch"]


def require_torch():
    """Import torch or raise ImportError with the install hint (never a bare ModuleNotFoundError)."""
    try:
        import torch  # noqa: F401
        import torch.distributed  # noqa: F401
    except ImportError as exc:  # torch absent, or a build without distributed support
        raise ImportError(TORCH_MISSING) from exc
    return torch


def __getattr__(name: str):
    if name == "PlacementMonitor":
        require_torch()
        from placement_lint.runtime.monitor import PlacementMonitor

        return PlacementMonitor
    if name == "HarnessContext":
        require_torch()
        from placement_lint.runtime.harness import HarnessContext

        return HarnessContext
    raise AttributeError(name)
