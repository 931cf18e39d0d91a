#!/usr/bin/env bash
# The GPU (NCCL) run of the runtime checker, as recorded in docs/runtime.md.
# Usage: bash bench/gpu_confirm.sh NPROC OUTDIR   (on a machine with >= NPROC CUDA devices)
set -uo pipefail
n=${1:-2}; out=${2:-/tmp/gpu_confirm}; mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
H=$(for f in fixtures/harnesses/[a-z]*.py; do printf -- "--harness %s:harness " "$f"; done)
$PY -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda devices", torch.cuda.device_count(), torch.cuda.get_device_name(0))'
t0=$(date +%s%N)
$PY -m placement_lint confirm fixtures/ $H --nproc "$n" --backend nccl --format json -o "$out/nccl$n.json"; rc1=$?
t1=$(date +%s%N)
$PY -m placement_lint confirm fixtures/ $H --nproc "$n" --backend nccl --verify-fix --format json -o "$out/nccl${n}_verify.json"; rc2=$?
t2=$(date +%s%N)
echo "confirm check-only: rc=$rc1 $(( (t1 - t0) / 1000000 )) ms; with --verify-fix: rc=$rc2 $(( (t2 - t1) / 1000000 )) ms"
$PY - "$out/nccl$n.json" "$out/nccl${n}_verify.json" <<'PYEOF'
import json, sys
for path in sys.argv[1:]:
    try:
        data = json.load(open(path))
    except Exception as exc:
        print(path, "unreadable:", exc); continue
    print("==", path)
    for f in data["findings"]:
        rt = f.get("runtime") or {}
        print(f"{f['path']}:{f['line']} {f['code']} {f['confidence']} -> {rt.get('verdict')}")
PYEOF
$PY bench/runtime_bench.py --nproc "$n" --backend nccl --repeat 3
