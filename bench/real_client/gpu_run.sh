#!/usr/bin/env bash
# The real-client runs on 2 GPUs with NCCL, on a machine without internet (Python 3.12, a CUDA
# torch). Carry the pure-Python wheels torchtitan needs plus libcst (placement-lint's parser) in
# .whl/tt (see README.md) and run, from the repository root:
#
#   bash bench/real_client/gpu_run.sh OUTDIR
#
# It installs the wheels into /tmp/site, analyses /tmp/site/torchtitan (the very files the ranks
# import, so findings and runtime sites match by path), and runs run_all.sh with --backend nccl.
# Everything it writes ends up in OUTDIR/real_client.tgz as well.
set -uo pipefail
out=${1:-/tmp/rc_gpu}; mkdir -p "$out"
work=/tmp/rc_nccl; rm -rf "$work"; mkdir -p "$work"
PY=${PY:-python3}
nvidia-smi -L | tee "$work/gpus.txt"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/tt/*.whl || exit 3
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torchtitan.models.deepseek_v3, libcst, torch; print('imports ok, torch', torch.__version__)" 2>&1 | tail -5 | tee "$work/imports.txt"
# flex attention (torchtitan's LM default) runs eagerly under the check; if its backward fails
# on this torch, fall back to torchtitan's SDPA module for every run
if TT_ATTN=flex $PY bench/real_client/compare.py --backend nccl --repeat 1 --json "$work/smoke_flex.json" > "$work/smoke_flex.txt" 2>&1; then
  export TT_ATTN=flex
else
  export TT_ATTN=sdpa
fi
echo "TT_ATTN=$TT_ATTN" | tee "$work/attn.txt"
timeout 480 bash bench/real_client/run_all.sh nccl "$work" /tmp/site "${QUICK-quick}" > "$work/run_all.log" 2>&1
echo "run_all rc=$?" >> "$work/run_all.log"
$PY bench/real_client/summarize.py "$work" > "$work/summary.md" 2>&1
tar czf "$out/real_client.tgz" -C /tmp rc_nccl
cp "$work/summary.md" "$work/run_all.log" "$out/" 2>/dev/null
cat "$work/summary.md"; tail -5 "$work/run_all.log"
