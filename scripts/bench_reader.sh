#!/usr/bin/env bash
# Benchmark (c): closed-book vs standard RAG with the frozen settings (k=5, prompt "short").
cd "$(dirname "$0")/.."
R=${REARQA:-.venv/bin/rearqa}
for ds in nq-test tqa-test; do
  for m in closed-book rag; do
    $R eval --dataset $ds --subset answerable --method $m --k 5 --limit 500 --out runs/c/$ds-$m
  done
  $R compare runs/c/$ds-closed-book/report.json runs/c/$ds-rag/report.json --out runs/c/$ds-compare
done

