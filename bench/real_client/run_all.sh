#!/usr/bin/env bash
# Every real-client run recorded in docs/runtime.md ("Real client"), on CPU/gloo or GPU/NCCL.
#
#   bash bench/real_client/run_all.sh BACKEND OUTDIR SRC [quick]
#
# BACKEND  gloo | nccl (2 ranks either way)
# OUTDIR   where the JSON/text reports and the logs go
# SRC      the folder that holds the `torchtitan` package to analyse. From run 1b on it is also put
#          first on PYTHONPATH, so the ranks import the very files the static pass read (an
#          installed byte-identical copy would match as well: see the README).
# quick    skip the timing repeats (compare.py --repeat 1)
#
# Environment: PY (python, default: python3), PL (placement-lint command, default: $PY -m
# placement_lint).
set -uo pipefail
backend=${1:-gloo}; out=${2:-/tmp/real_client}; src=${3:-/tmp/corpus/tt}; quick=${4:-}
mkdir -p "$out"
PY=${PY:-python3}
PL=${PL:-"$PY -m placement_lint"}
export PYTHONUNBUFFERED=1 PLACEMENT_LINT_QUIET=1
H=bench/real_client/torchtitan_moe.py:harness
SB=bench/real_client/torchtitan_scaled_bias.py:harness
LOW="--config bench/real_client/placement-lint.toml"
repeat=4; [ -n "$quick" ] && repeat=1

$PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda devices", torch.cuda.device_count())' | tee "$out/versions.txt"
$PY -m pip list 2>/dev/null | grep -i -E "^(torchtitan|tyro|docstring.parser|spmd.types|triton|libcst) " | tee -a "$out/versions.txt"

t() {  # t NAME CMD...: run, time, keep rc and stderr
  local name=$1; shift
  local t0=$(date +%s%N)
  "$@" 2> "$out/$name.err"; local rc=$?
  local t1=$(date +%s%N)
  echo "$name: rc=$rc $(( (t1 - t0) / 1000000 )) ms" | tee -a "$out/times.txt"
  tail -3 "$out/$name.err"
}

# 1. the command of the brief, as written (default threshold: medium and high), json and text
t default_json $PL confirm "$src/torchtitan" --harness $H --nproc 2 --backend "$backend" --format json -o "$out/tt_confirm.json"
t default_text $PL confirm "$src/torchtitan" --harness $H --nproc 2 --backend "$backend" --format text -o "$out/tt_confirm.txt"
# 1b. the same with the ranks importing the analysed copy and every finding (low and up)
export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"
t low_json $PL confirm "$src/torchtitan" $LOW --harness $H --nproc 2 --backend "$backend" --format json -o "$out/tt_confirm_low.json" --keep-dir "$out/keep_low"
t low_text $PL confirm "$src/torchtitan" $LOW --harness $H --nproc 2 --backend "$backend" --format text -o "$out/tt_confirm_low.txt"
# 2. expert parallelism (ep=2 on the TP ranks: torchtitan's all-to-all token dispatcher)
TT_EP=1 t ep_json $PL confirm "$src/torchtitan" $LOW --harness $H --nproc 2 --backend "$backend" --format json -o "$out/tt_confirm_ep.json" --keep-dir "$out/keep_ep"
# 3. --reference (a one-rank run of the same model): bf16 experts, then fp32 expert matmuls
t ref_json $PL confirm "$src/torchtitan" $LOW --harness $H --nproc 2 --backend "$backend" --reference --format json -o "$out/tt_confirm_ref.json" --keep-dir "$out/keep_ref"
TT_EXPERTS_FP32=1 t ref_fp32_json $PL confirm "$src/torchtitan" $LOW --harness $H --nproc 2 --backend "$backend" --reference --format json -o "$out/tt_confirm_ref_fp32.json" --keep-dir "$out/keep_ref_fp32"
# 4. ScaledBiasRowwiseLinear (torchtitan's vision MLP as Kimi-K2.5 shards it): without and with --reference
t sb_json $PL confirm "$src/torchtitan" $LOW --harness $SB --nproc 2 --backend "$backend" --format json -o "$out/tt_confirm_sb.json"
t sb_ref_json $PL confirm "$src/torchtitan" $LOW --harness $SB --nproc 2 --backend "$backend" --reference --verify-fix --format json -o "$out/tt_confirm_sb_ref.json" --keep-dir "$out/keep_sb_ref"
# 5. torchtitan's own DTensor init as it behaves on this device (identical TP shards on CPU)
TT_INIT=dtensor t dtensor_init_json $PL confirm "$src/torchtitan" $LOW --harness $H --nproc 2 --backend "$backend" --format json -o "$out/tt_confirm_dtensor_init.json"
# 6. wall time and numerics with and without the monitor
$PY bench/real_client/compare.py --backend "$backend" --repeat $repeat --json "$out/compare_tp.json" 2>"$out/compare_tp.err" | tee "$out/compare_tp.txt"
$PY bench/real_client/compare.py --backend "$backend" --repeat $(( repeat > 2 ? 2 : repeat )) --ep --json "$out/compare_ep.json" 2>"$out/compare_ep.err" | tee "$out/compare_ep.txt"

$PY bench/real_client/summarize.py "$out" | tee "$out/summary.md"
