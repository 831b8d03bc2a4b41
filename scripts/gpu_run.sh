#!/usr/bin/env bash
# The whole REAR experiment on one H200 (device tool), as four chains that share the GPU
# (GPU memory and utilisation every 15 s in $R/gpu_mem.log):
#   rear      train both rank heads (configs/train/gpu.yaml) -> choose head/checkpoint/routing/
#             threshold on dev-select
#             -> test runs (k=20; rank-head metrics)
#   rag-ft    3 seeds for REAR's token count -> choose steps and k on seed 0's dev-select -> test
#   cb-ft     closed-book-ft, the same
#   untuned   closed-book and rag (k=5), test runs (after REAR's training, to leave it the GPU)
# then a speed run (REAR vs rag-ft, same k/batch/max_new_tokens, nothing else on the GPU).
# Usage (repo root, after the calls that carry .gpu/p1, p2 and p3, see docs/rear.md):
#   setsid bash scripts/gpu_run.sh TOKEN_BUDGET RAG_SAVE CB_SAVE > /tmp/runs/driver.log 2>&1 &
# TOKEN_BUDGET: REAR's training tokens (computed here beforehand: same data order, seed 0);
# RAG_SAVE / CB_SAVE: half of the baselines' step counts for that budget (their mid checkpoint).
# Progress lines go to /tmp/runs/progress; scripts/gpu_pack.sh packs what is finished into $OUT.
# A CPU rehearsal of the same script, tiny: GPU_ENV=/dev/null CFG=tiny.yaml BUNDLE=build/bundle
#   SEL_LIMIT=4 EXTRA="--limit 4 --batch-size 2 --device cpu" R=/tmp/rehearsal bash scripts/gpu_run.sh ...
set -uo pipefail
source scripts/gpu_common.sh
budget=$1 rag_save=$2 cb_save=$3

chain_rear() {  # both rank heads train side by side; each is chosen on dev-select, then the better
  train rear --out $R/rear-s0 --seed 0 > $R/train-rear.log 2>&1 & a=$!
  train rear --out $R/rear-lowrank-s0 --seed 0 --head lowrank_attn > $R/train-rear-lowrank.log 2>&1 & b=$!
  wait $a || { mark "rear: training FAILED"; return; }
  wait $b || mark "rear lowrank_attn: training FAILED"
  mark "rear: trained"
  touch $R/rear-trained
  python3 -m rearqa.eval.select $SEL --out $R/select-rear --rear $R/rear-s0/final \
      $R/rear-s0/checkpoints/$(printf step-%07d ${REAR_SAVE:-150})/model > $R/select-rear.log 2>&1 & a=$!
  [ -d $R/rear-lowrank-s0/final ] && python3 -m rearqa.eval.select $SEL --out $R/select-rear-lowrank \
      --rear $R/rear-lowrank-s0/final > $R/select-rear-lowrank.log 2>&1
  wait $a || { mark "rear: select FAILED"; return; }
  ck=$(python3 - $R/select-rear/selection.json $R/select-rear-lowrank/selection.json <<'PY'
import json, sys, os
rows = [json.load(open(p))["rear"]["chosen"] for p in sys.argv[1:] if os.path.isfile(p)]
print(max(rows, key=lambda r: (r["em"], r["f1"]))["checkpoint"])
PY
)
  mark "rear: chose $ck"
  keep_rear "$ck"
  for t in "${TESTS[@]}"; do  # the three test sets side by side
    set -- $t
    { ev --split $t --methods rear --checkpoint $R/rear-chosen --k 20 --out $R/test/$1/rear \
          > $R/test-rear-$1.log 2>&1 || mark "rear: test $1 FAILED"
      mark "rear: test $1 done"; } &
  done
  wait
}

chain_base() {  # method save_every: 3 seeds side by side (scripts/gpu_baselines.sh)
  PARALLEL=1 bash scripts/gpu_baselines.sh $1 $2 $budget 0 1 2 > $R/base-$1.log 2>&1
}

chain_untuned() {
  while [ ! -f $R/rear-trained ]; do sleep 10; done
  for t in "${TESTS[@]}"; do
    set -- $t
    ev --split $t --methods closed-book rag --k 5 --out $R/test/$1/untuned > $R/test-untuned-$1.log 2>&1 \
        || mark "untuned: test $1 FAILED"
    mark "untuned: test $1 done"
  done
}

mark "start (budget $budget)"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader >> $R/progress
gpu_watch & watcher=$!
chain_rear & p1=$!
chain_base rag-ft $rag_save & p2=$!
chain_base closed-book-ft $cb_save & p3=$!
chain_untuned & p4=$!
wait $p1 $p2 $p3 $p4
mark "chains done"
# Speed: REAR vs rag-ft seed 0 in one run, same k, batch, max_new_tokens; nothing else running.
rel=$(chosen $R/select-rag-ft/selection.json rag-ft adapter); rel=${rel#$R/rag-ft-s0/}
for k in 5 20; do
  ev --split nq-test --limit 200 --methods rag-ft rear --k $k --batch-size 8 --checkpoint $R/rear-chosen \
      --adapter-rag-ft $R/rag-ft-s0/$rel --calibration-split none --out $R/speed/k$k > $R/speed-k$k.log 2>&1
  mark "speed k=$k done"
done
kill $watcher
mark "all done"
