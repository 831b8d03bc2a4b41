#!/usr/bin/env bash
# The short REAR-vs-rag-ft run for what is left of a session's device time (~15 min; the full
# experiment is scripts/gpu_run.sh): REAR (linear head) and rag-ft seed 0 train side by side for
# the same token budget; REAR's routing and threshold are chosen on dev-select (final checkpoint
# only), rag-ft keeps its training k (3) and final checkpoint (no sweep); then NQ and TriviaQA
# test runs of both, then the speed run. Usage as gpu_run.sh:
#   setsid bash scripts/gpu_short.sh TOKEN_BUDGET > /tmp/runs/driver.log 2>&1 &
set -uo pipefail
source scripts/gpu_common.sh
budget=$1
mark "start short run (budget $budget)"
gpu_watch & watcher=$!
train rear --out $R/rear-s0 --seed 0 > $R/train-rear.log 2>&1 & a=$!
train rag-ft --out $R/rag-ft-s0 --seed 0 --token-budget $budget > $R/train-rag-ft-s0.log 2>&1 & b=$!
wait $a && mark "rear: trained" || mark "rear: training FAILED"
python3 -m rearqa.eval.select $SEL --out $R/select-rear --rear $R/rear-s0/final \
    > $R/select-rear.log 2>&1 && mark "rear: chose" || mark "rear: select FAILED"
keep_rear $R/rear-s0/final
wait $b && mark "rag-ft: trained" || mark "rag-ft: training FAILED"
jobs_=()
for t in "${TESTS[@]:0:2}"; do  # NQ and TriviaQA, both methods, side by side
  set -- $t
  { ev --split $t --methods rear --checkpoint $R/rear-chosen --k 20 --out $R/test/$1/rear \
        > $R/test-rear-$1.log 2>&1; mark "rear: test $1 done ($?)"; } & jobs_+=($!)
  { ev --split $t --methods rag-ft --adapter-rag-ft $R/rag-ft-s0/final --k 3 \
        --out $R/test/$1/rag-ft-s0 > $R/test-rag-ft-s0-$1.log 2>&1; mark "rag-ft: test $1 done ($?)"; } & jobs_+=($!)
done
wait "${jobs_[@]}"  # not the GPU watcher
ev --split nq-test --limit 200 --methods rag-ft rear --k 5 --batch-size 8 --checkpoint $R/rear-chosen \
    --adapter-rag-ft $R/rag-ft-s0/final --calibration-split none --out $R/speed/k5 > $R/speed-k5.log 2>&1
mark "speed k=5 done"
kill $watcher
mark "all done"
