#!/usr/bin/env bash
# Train REAR and its two baselines side by side on one GPU (device tool), then pack what comes
# back. Usage (repo root, after the .gpu/p1-p3 calls): bash scripts/gpu_train.sh REAR_TOKENS SEEDS...
# REAR_TOKENS: the baselines' token budget (a REAR run's token count, see docs/rear.md).
set -uo pipefail
source scripts/gpu_env.sh
budget=$1; shift
seeds=${*:-0}
mkdir -p /tmp/runs
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
train() { python3 -m rearqa.app.train_cmd "$@" -c configs/train/gpu.yaml --quiet; }
pids=()
train rear --out /tmp/runs/rear-s0 --seed 0 > /tmp/runs/rear-s0.log 2>&1 & pids+=($!)
for s in $seeds; do
  train rag-ft --out /tmp/runs/rag-ft-s$s --seed $s --token-budget "$budget" > /tmp/runs/rag-ft-s$s.log 2>&1 & pids+=($!)
  train closed-book-ft --out /tmp/runs/closed-book-ft-s$s --seed $s --token-budget "$budget" > /tmp/runs/closed-book-ft-s$s.log 2>&1 & pids+=($!)
done
for p in "${pids[@]}"; do wait $p; echo "exit $?"; done
for f in /tmp/runs/*.log; do echo "== $f"; tail -n 3 "$f"; done
