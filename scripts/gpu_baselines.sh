#!/usr/bin/env bash
# One fine-tuned baseline, seeds one after another (so it fits beside the REAR evaluations on
# the GPU, where gpu_run.sh's side-by-side seeds ran out of memory): train (resumes), choose
# steps and k on the first seed's dev-select, test every seed.
# Usage: setsid bash scripts/gpu_baselines.sh METHOD SAVE_EVERY TOKEN_BUDGET SEED... &
set -uo pipefail
source scripts/gpu_env.sh
set +e
m=$1 save=$2 budget=$3; shift 3
R=/tmp/runs
SEL="--snapshot /tmp/bundle --splits nq-dev-select tqa-dev-select --limit 500 --batch-size 64"
TESTS=("nq-test" "tqa-test --limit 3000" "squad-test --limit 1000 --calibration-split none")
mark() { echo "$(date +%T) $*" >> "$R/progress"; }
chosen() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['chosen'][sys.argv[3]])" "$@"; }
first=$1
for s in "$@"; do
  python3 -m rearqa.app.train_cmd $m -c configs/train/gpu.yaml --quiet --out $R/$m-s$s --seed $s \
      --token-budget $budget --save-every $save > $R/train-$m-s$s.log 2>&1 && mark "$m s$s: trained" || mark "$m s$s: training FAILED"
  if [ $s = $first ] && [ ! -f $R/select-$m/selection.json ]; then
    ks="1"; [ $m = rag-ft ] && ks="1 3 5"
    python3 -m rearqa.eval.select $SEL --out $R/select-$m --$m $R/$m-s$s/final \
        $R/$m-s$s/checkpoints/$(printf step-%07d $save)/model --rag-ft-k $ks > $R/select-$m.log 2>&1 \
        || { mark "$m: select FAILED"; exit 1; }
    mark "$m: chose $(chosen $R/select-$m/selection.json $m adapter) k=$(chosen $R/select-$m/selection.json $m k)"
  fi
  ad=$(chosen $R/select-$m/selection.json $m adapter); k=$(chosen $R/select-$m/selection.json $m k)
  rel=${ad#$R/$m-s$first/}
  for t in "${TESTS[@]}"; do
    set -- $t
    python3 -m rearqa.eval.rear_eval --snapshot /tmp/bundle --batch-size 64 --split $t --methods $m \
        --adapter-$m $R/$m-s$s/$rel --k $k --out $R/test/$1/$m-s$s > $R/test-$m-s$s-$1.log 2>&1 \
        && mark "$m s$s: test $1 done" || mark "$m s$s: test $1 FAILED"
  done
done
