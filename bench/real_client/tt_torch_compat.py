"""Let torchtitan 0.3.0 import on torch releases that lack names it imports (torch 2.11, the GPU
machine's torch): torchtitan 0.3.0 is built against torch nightlies.

Found by importing every torchtitan module the harnesses use on torch 2.11 and stubbing each
`cannot import name` in turn: one name, used only by code the harnesses do not run (FSDP's
data-parallel mesh dims, for MTP layers and `fully_shard`). A stub raises if anything uses it, so
a harness that did would fail loudly rather than compute something else.
"""

from __future__ import annotations

import importlib

#: (module, name): what torchtitan 0.3.0 imports and torch 2.11 does not have
MISSING_ON_OLDER_TORCH = (
    ("torch.distributed.fsdp", "DataParallelMeshDims"),
)


def _stub(name: str) -> type:
    def _refuse(*_a, **_k):
        raise RuntimeError(f"{name} is a placeholder: this torch lacks it (bench/real_client/tt_torch_compat.py)")

    return type(name, (), {"__init__": _refuse, "__doc__": f"placeholder for torch's {name}"})


def install() -> list[str]:
    """Add a placeholder for each missing name; returns what was stubbed (empty on a torch that
    has them all)."""
    stubbed = []
    for mod_name, name in MISSING_ON_OLDER_TORCH:
        mod = importlib.import_module(mod_name)
        if not hasattr(mod, name):
            setattr(mod, name, _stub(name))
            stubbed.append(f"{mod_name}.{name}")
    return stubbed
