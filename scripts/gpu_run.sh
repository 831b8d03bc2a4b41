#!/usr/bin/env bash
# The whole REAR experiment on one H200 (device tool), as four chains that share the GPU:
#   rear      train (configs/train/gpu.yaml) -> choose checkpoint/routing/threshold on dev-select
#             -> test runs (k=20; rank-head metrics)
#   rag-ft    3 seeds for REAR's token count -> choose steps and k on seed 0's dev-select -> test
#   cb-ft     closed-book-ft, the same
#   untuned   closed-book and rag (k=5), test runs (after REAR's training, to leave it the GPU)
# then a speed run (REAR vs rag-ft, same k/batch/max_new_tokens, nothing else on the GPU).
# Usage (repo root, after the .gpu/c1 call, see docs/rear.md):
#   setsid bash scripts/gpu_run.sh TOKEN_BUDGET RAG_SAVE CB_SAVE > /tmp/runs/driver.log 2>&1 &
# TOKEN_BUDGET: REAR's training tokens (computed here beforehand: same data order, seed 0);
# RAG_SAVE / CB_SAVE: half of the baselines' step counts for that budget (their mid checkpoint).
# Progress lines go to /tmp/runs/progress; scripts/gpu_pack.sh packs what is finished into $OUT.
# A CPU rehearsal of the same script, tiny: GPU_ENV=: CFG=tiny.yaml BUNDLE=build/bundle
#   SEL_LIMIT=4 EXTRA="--limit 4 --batch-size 2 --device cpu" R=/tmp/rehearsal bash scripts/gpu_run.sh ...
set -uo pipefail
source ${GPU_ENV:-scripts/gpu_env.sh}
set +e  # gpu_env.sh sets -e; a failing step must not end its chain unmarked
budget=$1 rag_save=$2 cb_save=$3
R=${R:-/tmp/runs} CFG=${CFG:-configs/train/gpu.yaml} BUNDLE=${BUNDLE:-/tmp/bundle} EXTRA=${EXTRA:-}
mkdir -p "$R/test"
SEL="--snapshot $BUNDLE --splits nq-dev-select tqa-dev-select --limit ${SEL_LIMIT:-500} --batch-size 64 $EXTRA"
TESTS=("nq-test" "tqa-test --limit 3000" "squad-test --limit 1000 --calibration-split none")
mark() { echo "$(date +%T) $*" >> "$R/progress"; }
train() { python3 -m rearqa.app.train_cmd "$@" -c $CFG --quiet; }
ev() { python3 -m rearqa.eval.rear_eval --snapshot $BUNDLE --batch-size 64 "$@" $EXTRA; }
chosen() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['chosen'][sys.argv[3]])" "$@"; }

chain_rear() {
  train rear --out $R/rear-s0 --seed 0 > $R/train-rear.log 2>&1 || { mark "rear: training FAILED"; return; }
  mark "rear: trained"
  touch $R/rear-trained
  python3 -m rearqa.eval.select $SEL --out $R/select-rear --rear $R/rear-s0/final \
      $R/rear-s0/checkpoints/$(printf step-%07d ${REAR_SAVE:-150})/model > $R/select-rear.log 2>&1 || { mark "rear: select FAILED"; return; }
  ck=$(chosen $R/select-rear/selection.json rear checkpoint)
  mark "rear: chose $ck"
  python3 -c "from rearqa.reader.rear.checkpoint import compact_checkpoint as c; print(c('$ck'))" >> $R/select-rear.log 2>&1
  rm -rf $R/rear-chosen && cp -r "$ck" $R/rear-chosen
  for t in "${TESTS[@]}"; do
    set -- $t
    ev --split $t --methods rear --checkpoint $R/rear-chosen --k 20 --out $R/test/$1/rear \
        > $R/test-rear-$1.log 2>&1 || mark "rear: test $1 FAILED"
    mark "rear: test $1 done"
  done
}

chain_base() {  # method save_every
  local m=$1 save=$2 flag=--adapter-$1
  for s in 0 1 2; do
    train $m --out $R/$m-s$s --seed $s --token-budget $budget --save-every $save \
        > $R/train-$m-s$s.log 2>&1 &
  done
  wait
  mark "$m: trained"
  local step; step=$(printf 'step-%07d' $save)
  local ks="1"; [ $m = rag-ft ] && ks="1 3 5"
  python3 -m rearqa.eval.select $SEL --out $R/select-$m --$m $R/$m-s0/final \
      $R/$m-s0/checkpoints/$step/model --rag-ft-k $ks > $R/select-$m.log 2>&1 || { mark "$m: select FAILED"; return; }
  local ad k rel
  ad=$(chosen $R/select-$m/selection.json $m adapter); k=$(chosen $R/select-$m/selection.json $m k)
  rel=${ad#$R/$m-s0/}
  mark "$m: chose $rel k=$k"
  for t in "${TESTS[@]}"; do
    set -- $t
    for s in 0 1 2; do
      ev --split $t --methods $m $flag $R/$m-s$s/$rel --k $k --out $R/test/$1/$m-s$s \
          > $R/test-$m-s$s-$1.log 2>&1 || mark "$m: test $1 seed $s FAILED"
    done
    mark "$m: test $1 done"
  done
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
mark "all done"
