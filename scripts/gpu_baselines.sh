#!/usr/bin/env bash
# One fine-tuned baseline: train its seeds for REAR's token budget (resumable), choose training
# steps (the mid checkpoint at SAVE_EVERY or the final one) and, for rag-ft, k on the first
# seed's dev-select, then test every seed. Seeds train side by side with PARALLEL=1 (as
# scripts/gpu_run.sh runs them), else one after another.
# Usage: [PARALLEL=1] bash scripts/gpu_baselines.sh METHOD SAVE_EVERY TOKEN_BUDGET SEED...
set -uo pipefail
source scripts/gpu_common.sh
m=$1 save=$2 budget=$3; shift 3
seeds=("$@") first=$1
for s in "${seeds[@]}"; do
  if [ "${PARALLEL:-0}" = 1 ]; then
    train $m --out $R/$m-s$s --seed $s --token-budget $budget --save-every $save > $R/train-$m-s$s.log 2>&1 &
  else
    train $m --out $R/$m-s$s --seed $s --token-budget $budget --save-every $save > $R/train-$m-s$s.log 2>&1 \
        || mark "$m s$s: training FAILED"
  fi
done
wait
mark "$m: trained"
if [ ! -f $R/select-$m/selection.json ]; then
  ks="1"; [ $m = rag-ft ] && ks="1 3 5"
  python3 -m rearqa.eval.select $SEL --out $R/select-$m --$m $R/$m-s$first/final \
      $R/$m-s$first/checkpoints/$(printf step-%07d $save)/model --rag-ft-k $ks > $R/select-$m.log 2>&1 \
      || { mark "$m: select FAILED"; exit 1; }
fi
ad=$(chosen $R/select-$m/selection.json $m adapter); k=$(chosen $R/select-$m/selection.json $m k)
rel=${ad#$R/$m-s$first/}
mark "$m: chose $rel k=$k"
for t in "${TESTS[@]}"; do  # the seeds side by side, one test set after another
  set -- $t
  for s in "${seeds[@]}"; do
    ev --split $t --methods $m --adapter-$m $R/$m-s$s/$rel --k $k --out $R/test/$1/$m-s$s \
        > $R/test-$m-s$s-$1.log 2>&1 || mark "$m: test $1 seed $s FAILED" &
  done
  wait
  mark "$m: test $1 done"
done
