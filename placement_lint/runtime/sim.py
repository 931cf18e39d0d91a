"""`--backend sim`: all ranks in one process on torch's local-tensor simulation.

Status: feature detection and the refusal rules are in place (`_compat.local_tensor_support`,
rank-query detection in cli.py); fingerprinting gradients that are LocalTensors (one tensor per
simulated rank) is not implemented yet, so a sim run stops with a clear message instead of
returning verdicts that were never computed.
"""

from __future__ import annotations

import sys


def unsupported_reason() -> str:
    from placement_lint.runtime._compat import local_tensor_support

    mod, reason = local_tensor_support()
    if mod is None:
        return reason
    return ("torch's local-tensor simulation is available, but this version of placement-lint does not yet "
            "fingerprint simulated per-rank gradients; use --backend gloo (CPU) or nccl")


def run_sim(spec: dict) -> int:
    sys.stderr.write(f"placement-lint: error: --backend sim: {unsupported_reason()}\n")
    return 2
