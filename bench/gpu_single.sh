#!/usr/bin/env bash
# The runtime checker on a machine with ONE GPU (Python 3.12, torch 2.11): what fits when no
# multi-GPU machine is lent (cross-rank verdicts on NCCL need 2+ GPUs; see docs/runtime.md).
# Carry the wheels of .whl/gpu (libcst for Python 3.12, pytest; see bench/README.md) and run,
# from the repository root:   bash bench/gpu_single.sh OUTDIR [STEPS]
# STEPS (default "12345") picks the parts below; two device calls of 10 minutes: 123, then 45.
set -uo pipefail
out=${1:-/tmp/gpu_single}; mkdir -p "$out"
steps=${2:-12345}
step() { [[ $steps == *$1* ]]; }
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; $PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.device_count())'; } 2>&1 | tee "$out/versions.txt"
$PY -m pip install -q --no-index --find-links .whl/gpu --no-build-isolation . pytest > "$out/install.txt" 2>&1 \
  || { echo "install failed"; tail -20 "$out/install.txt"; exit 3; }
B="fixtures/branch_double_count.py fixtures/branch_double_count_fixed.py"
BH="--harness fixtures/harnesses/branch_double_count.py:harness --harness fixtures/harnesses/branch_double_count_fixed.py:harness"
ALL=$(for f in fixtures/harnesses/[a-z]*.py; do printf -- "--harness %s:harness " "$f"; done)
secs() { local t0=$(date +%s%N); "$@"; local rc=$?; echo "rc=$rc $(( ($(date +%s%N) - t0) / 1000000 )) ms: ${*:4:6}" | tee -a "$out/times.txt"; }
# 1. torch 2.11: the double count and the localization, gloo 2 and 4 ranks (CPU), and sim
step 1 && for n in 2 4; do
  secs $PY -m placement_lint confirm $B $BH --nproc $n --backend gloo --reference --format json -o "$out/branch_gloo$n.json" 2> "$out/branch_gloo$n.err"
done
step 1 && secs $PY -m placement_lint confirm $B $BH --nproc 2 --backend sim --reference --format json -o "$out/branch_sim2.json" 2> "$out/branch_sim2.err"
# 2. CUDA tensors: NCCL with the one GPU (one rank: no cross-rank verdict, but every hook,
#    fingerprint and sketch runs on the device), the whole fixture suite with --reference
step 2 && secs $PY -m placement_lint confirm fixtures/ $ALL --nproc 1 --backend nccl --reference --format json -o "$out/suite_nccl1.json" 2> "$out/suite_nccl1.err"
# 3. the whole fixture suite, gloo 2 ranks, torch 2.11, with --reference (localization on every fixture)
step 3 && secs $PY -m placement_lint confirm fixtures/ $ALL --nproc 2 --backend gloo --reference --format json -o "$out/suite_gloo2.json" 2> "$out/suite_gloo2.err"
# 4. wall time with and without the monitor: NCCL one rank, gloo two ranks
if step 4; then
  $PY bench/runtime_bench.py --nproc 1 --backend nccl --repeat 1 > "$out/bench_nccl1.txt" 2>&1; tail -8 "$out/bench_nccl1.txt"
  $PY bench/runtime_bench.py --nproc 2 --backend gloo --repeat 1 > "$out/bench_gloo2.txt" 2>&1; tail -8 "$out/bench_gloo2.txt"
fi
# 5. the runtime tests under torch 2.11 (the 2-GPU NCCL test skips)
if step 5; then
  timeout 400 $PY -m pytest -q -p no:cacheprovider tests/runtime > "$out/pytest_runtime.txt" 2>&1; echo "pytest rc=$?" | tee -a "$out/times.txt"
  tail -15 "$out/pytest_runtime.txt"
fi
$PY - "$out" <<'PYEOF'
import json, sys, os
out = sys.argv[1]
for name in sorted(os.listdir(out)):
    if not name.endswith(".json"):
        continue
    try:
        data = json.load(open(os.path.join(out, name)))
    except Exception as exc:
        print(name, "unreadable:", exc); continue
    print("==", name, data.get("runtime_summary"))
    for f in data["findings"]:
        rt = f.get("runtime") or {}
        if f["code"] >= "DTP900" or rt.get("verdict") not in (None, "not-reached"):
            print(f"  {f['path']}:{f['line']} {f['code']} -> {rt.get('verdict')}: {f['message'][:160]}")
PYEOF
