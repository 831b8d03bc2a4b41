#!/usr/bin/env bash
# Issue 16 on the GPU machine in one device call (<= 10 minutes), from the repo root there:
#   bash scripts/gpu_kernels.sh
# Needs nothing carried: the image's python3 has torch and triton, and the kernels import only
# them and rearqa's leaves. Steps, each under its own time share of CALL_LIMIT (default 570 s):
#   1. env: GPU name, driver, clocks, torch and triton versions   -> $OUT/kernels-env.txt
#   2. the GPU tests (tests/kernels, the MLA reader's decode through the kernel in
#      tests/reader/backbone/test_transmla_modeling.py, and an unmerged adapter's layers through
#      the fused LoRA kernel in tests/reader/test_adapter_unmerged.py), pytest-xdist over XDIST workers
#      (kernel compiles are the slow part)                        -> $OUT/kernels-tests.log, kernels-junit.xml,
#      and each failure as it happens                             -> $OUT/kernels-failures.log
#      and each test's outcome and duration as it ends             -> $OUT/kernels-durations.log
#      When every failure ran the card out of memory (the workers share it), those tests run again
#      one at a time (RERUN_BUDGET)                                -> $OUT/kernels-tests-rerun.log,
#      kernels-junit-rerun.xml, kernels-failures-rerun.log, kernels-oom-rerun.txt
#   3. the benchmark (scripts/kernel_bench.py; BENCH=0 leaves it out) -> $OUT/kernel-bench.json, kernel-bench.log
#   4. with DECODE_BENCH=1: the MLA reader's decode against GQA (scripts/bench_mla_decode.py, both
#      presets) through the kernel and, for comparison, through the torch reference
#      (REARQA_KERNELS=reference)                                 -> $OUT/decode-PRESET-{triton,reference}.json
#   5. with HF_ADAPTER_BENCH=1: an adapter on engine hf merged, unmerged through the fused LoRA
#      kernel, and through PEFT's layers (scripts/bench_hf_adapter.py --random) -> $OUT/hf-adapter.json
# At the end the logs (*.log, *.txt, *.xml) are packed into $OUT/kernels-logs.tgz: the device
# returns at most 8 files, and the JSONs (at most 5) come back as they are.
# Settings: CALL_LIMIT (570), TEST_BUDGET (280 s), XDIST (one worker per 10 GiB of the card, at
# most 16, the machine's cores: session 27's 16 on an 80 GiB H100 ran 12 tests out of memory and
# finished the rest in 128 s; session 24's 8 there ran none out), RERUN_BUDGET (150 s, taken only
# when there is something to run again), BENCH (1; 0: no step 3), BENCH_ARGS (extra kernel_bench args, e.g.
# "--parts mla" for a second call that only times), DECODE_BENCH (0), DECODE_RESERVE (150 s kept
# for step 4 when it is on), HF_ADAPTER_BENCH (0), HF_ADAPTER_RESERVE (90 s kept for step 5),
# REARQA_DURATIONS (tests/kernels/gpu-durations.log: an earlier run's durations, longest first).
# Exit: 0 tests passed and the benchmark finished; 1 otherwise (the logs say which).
set -uo pipefail
: "${OUT:?OUT is unset: this runs on the device machine (or set OUT for a rehearsal)}"
T0=$(date +%s)
LIMIT=${CALL_LIMIT:-570}
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset TRITON_INTERPRET REARQA_KERNELS
mkdir -p "$OUT"

{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv
  python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__,
torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, "SMs")'
} > "$OUT/kernels-env.txt" 2>&1
cat "$OUT/kernels-env.txt"

# The image's package list (device KINDS.md) names no pytest: carry it as wheels in .whl/ (git-
# ignored: `carry: [".whl"]`), made here with
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl pytest pluggy iniconfig packaging pytest-xdist execnet
if ! python3 -c 'import pytest' 2>/dev/null; then
  if ls .whl/pytest-*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/kernels-site .whl/*.whl \
      && export PYTHONPATH="/tmp/kernels-site:$PYTHONPATH"
  else
    echo "gpu_kernels: no pytest on this machine and no .whl/pytest-*.whl carried (see above)"
  fi
fi
# The project's peft (pyproject pins it) for the unmerged adapter's layers (test and step 5): the
# image's may be another version. Carried in .whl/ too (build/whl-stage/ has it after gpu_prepare.sh).
PEFT_WHL=$(ls .whl/peft-*.whl 2>/dev/null | head -n 1)
if [ -n "$PEFT_WHL" ] && ! python3 -c "import peft, sys; sys.exit('peft-' + peft.__version__ + '-' not in '$PEFT_WHL')" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/kernels-peft "$PEFT_WHL" \
    && export PYTHONPATH="/tmp/kernels-peft:$PYTHONPATH"
fi
XD=""  # pytest-xdist when it is there (kernel compiles are the slow part), one process otherwise
GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
GPU_GIB=$(( ${GPU_MIB:-0} / 1024 ))
WORKERS=$(( GPU_GIB / 10 < 1 ? 1 : (GPU_GIB / 10 > 16 ? 16 : GPU_GIB / 10) ))
python3 -c 'import xdist' 2>/dev/null && XD="-n ${XDIST:-$WORKERS}"
echo "gpu_kernels: ${GPU_GIB} GiB on the card, pytest ${XD:-without xdist}"

status=0
# each failure is written as it happens (tests/conftest.py): session 21's run hit its time limit
# before pytest's summary, and its 7 failures came back as F's without names
export REARQA_FAILURE_LOG="$OUT/kernels-failures.log"
# and each test's outcome and duration as it ends (session 24's run was cut about 12 tests short,
# with nothing to say which tests those were or how long any took)
export REARQA_DURATION_LOG="$OUT/kernels-durations.log"
# and the tests an earlier run timed start longest first (tests/conftest.py): session 28's run was
# cut with two 86-s fp32 cases running, which xdist had handed out near the end
export REARQA_DURATIONS="${REARQA_DURATIONS:-tests/kernels/gpu-durations.log}"
# shellcheck disable=SC2086
timeout "${TEST_BUDGET:-280}" python3 -m pytest -q -p no:cacheprovider $XD -ra \
  --junitxml="$OUT/kernels-junit.xml" tests/kernels tests/reader/backbone/test_transmla_modeling.py \
  "tests/reader/test_adapter_unmerged.py::test_the_fused_layer_runs_the_kernel_on_the_gpu" \
  2>&1 | tail -n 400 > "$OUT/kernels-tests.log"
tests_rc=${PIPESTATUS[0]}
tail -n 15 "$OUT/kernels-tests.log"
[ -s "$REARQA_FAILURE_LOG" ] && grep '^FAILED ' "$REARQA_FAILURE_LOG"
# A finished run (pytest's 1: tests failed) whose every failure is the card's memory runs those
# tests again, one at a time; any other failure stands as it is (gpu_units.py oom-failures).
if [ "$tests_rc" = 1 ] && python3 scripts/gpu_units.py oom-failures "$REARQA_FAILURE_LOG" \
     > "$OUT/kernels-oom-rerun.txt"; then
  mapfile -t again < "$OUT/kernels-oom-rerun.txt"
  # within the call's limit, so that the logs are still packed at the end
  rerun=$(( LIMIT - $(date +%s) + T0 - 30 ))
  rerun=$(( rerun < ${RERUN_BUDGET:-150} ? rerun : ${RERUN_BUDGET:-150} ))
  rerun=$(( rerun < 1 ? 1 : rerun ))
  echo "gpu_kernels: every failure ran the card out of memory; ${#again[@]} tests again, one at a time (${rerun} s)"
  REARQA_FAILURE_LOG="$OUT/kernels-failures-rerun.log" REARQA_DURATION_LOG="$OUT/kernels-durations-rerun.log" \
    timeout "$rerun" \
    python3 -m pytest -q -p no:cacheprovider -ra --junitxml="$OUT/kernels-junit-rerun.xml" -- "${again[@]}" \
    2>&1 | tail -n 200 > "$OUT/kernels-tests-rerun.log"
  tests_rc=${PIPESTATUS[0]}
  tail -n 5 "$OUT/kernels-tests-rerun.log"
fi
[ "$tests_rc" = 0 ] || status=1

left=$(( LIMIT - $(date +%s) + T0 - 5 - (${DECODE_BENCH:-0} == 1 ? ${DECODE_RESERVE:-150} : 0) \
        - (${HF_ADAPTER_BENCH:-0} == 1 ? ${HF_ADAPTER_RESERVE:-90} : 0) ))
if [ "${BENCH:-1}" = 0 ]; then
  echo "gpu_kernels: BENCH=0, no benchmark"
elif [ "$left" -gt 30 ]; then
  # shellcheck disable=SC2086
  timeout "$left" python3 scripts/kernel_bench.py --out "$OUT/kernel-bench.json" ${BENCH_ARGS:-} \
    > "$OUT/kernel-bench.log" 2>&1 || status=1
  tail -n 100 "$OUT/kernel-bench.log"
else
  echo "gpu_kernels: no time left for the benchmark ($left s)"; status=1
fi
if [ "${DECODE_BENCH:-0}" = 1 ]; then
  for preset in smollm2 llama3-8b-attn; do
    for k in triton reference; do
      left=$(( LIMIT - $(date +%s) + T0 - 5 ))
      [ "$left" -gt 20 ] || { echo "gpu_kernels: no time left for decode $preset $k"; status=1; continue; }
      REARQA_KERNELS=$k timeout "$left" python3 scripts/bench_mla_decode.py --preset "$preset" --device cuda \
        --contexts 4096 32768 --batch 1 32 --steps 16 --out "$OUT/decode-$preset-$k.json" \
        > "$OUT/decode-$preset-$k.log" 2>&1 || status=1
      tail -n 6 "$OUT/decode-$preset-$k.log"
    done
  done
fi
if [ "${HF_ADAPTER_BENCH:-0}" = 1 ]; then
  left=$(( LIMIT - $(date +%s) + T0 - 5 ))
  if [ "$left" -gt 20 ]; then
    timeout "$left" python3 scripts/bench_hf_adapter.py --device cuda --random --batch 1 32 \
      --out "$OUT/hf-adapter.json" > "$OUT/hf-adapter.log" 2>&1 || status=1
    tail -n 10 "$OUT/hf-adapter.log"
  else
    echo "gpu_kernels: no time left for the hf adapter benchmark"; status=1
  fi
fi
echo "gpu_kernels: exit $status after $(( $(date +%s) - T0 )) s"
# The device returns at most 8 files from $OUT (session 18 lost the benchmark JSON and every log
# to that with DECODE_BENCH=1): the logs travel as one archive, the JSONs as they are.
( cd "$OUT" && shopt -s nullglob && logs=(*.log *.txt *.xml) && [ ${#logs[@]} -gt 0 ] \
    && tar czf kernels-logs.tgz -- "${logs[@]}" && rm -f -- "${logs[@]}" )
exit $status
