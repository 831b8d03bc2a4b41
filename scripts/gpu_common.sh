# Sourced by scripts/gpu_run.sh and scripts/gpu_baselines.sh: the GPU machine's environment
# (scripts/gpu_env.sh, or GPU_ENV for a CPU rehearsal) and the run's shared settings and helpers.
# Overrides for a tiny CPU rehearsal: R, CFG, BUNDLE, SEL_LIMIT, EXTRA (see gpu_run.sh's header).
export GPU_ENV=${GPU_ENV:-scripts/gpu_env.sh}
source $GPU_ENV
set +e  # gpu_env.sh sets -e; a failing step must not end its chain unmarked
# Exported: gpu_run.sh runs gpu_baselines.sh as a child, which sources this file again.
export R=${R:-/tmp/runs} CFG=${CFG:-configs/train/gpu.yaml} BUNDLE=${BUNDLE:-/tmp/bundle}
export EXTRA=${EXTRA:-} SEL_LIMIT=${SEL_LIMIT:-500}
mkdir -p "$R/test"
# Many processes share the GPU and 16 cores: no oversubscribed CPU thread pools, less
# fragmentation of each process's cached GPU memory.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# Micro-batches per method (an optimiser step is 16 groups / 128 examples for all three):
# rag-ft's 128 prompts of ~370 tokens would need > 80 GiB of activations in one micro-batch.
declare -A MICRO=([rear]="" [rag-ft]="--batch 2 --grad-accum 8" [closed-book-ft]="--batch 8 --grad-accum 2")
SEL="--snapshot $BUNDLE --splits nq-dev-select tqa-dev-select --limit $SEL_LIMIT --batch-size 64 $EXTRA"
TESTS=("nq-test" "tqa-test --limit 3000" "squad-test --limit 1000 --calibration-split none")
mark() { echo "$(date +%T) $*" >> "$R/progress"; }
train() { python3 -m rearqa.app.train_cmd "$@" ${MICRO[$1]} -c $CFG --quiet; }
ev() { python3 -m rearqa.eval.rear_eval --snapshot $BUNDLE --batch-size 64 "$@" $EXTRA; }
gpu_watch() {  # GPU memory in use and utilisation every 15 s into $R/gpu_mem.log, until killed
  while sleep 15; do
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null \
        | sed "s/^/$(date +%T) /" >> "$R/gpu_mem.log"
  done
}
keep_rear() {  # the chosen REAR checkpoint $1: bf16 adapter, copied to $R/rear-chosen for the tests
  python3 -c "from rearqa.reader.rear.checkpoint import compact_checkpoint as c; print(c('$1'))" >> $R/select-rear.log 2>&1
  rm -rf $R/rear-chosen && cp -r "$1" $R/rear-chosen
}
chosen() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['chosen'][sys.argv[3]])" "$@"; }
