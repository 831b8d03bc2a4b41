#!/usr/bin/env bash
# Pack what scripts/gpu_run.sh has finished into $OUT (device tool: at most 8 files of 16 MiB).
# Usage: bash scripts/gpu_pack.sh [WAIT_S]: first wait up to WAIT_S seconds for "all done".
R=${R:-/tmp/runs}
end=$(( $(date +%s) + ${1:-0} ))
while [ $(date +%s) -lt $end ] && ! grep -q "all done" $R/progress 2>/dev/null; do sleep 5; done
cat $R/progress 2>/dev/null; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
for f in $R/train-*.log; do echo "== $f"; tail -c 300 "$f"; echo; done 2>/dev/null | tail -n 40
grep -h "Error\|error" $R/*.log 2>/dev/null | tail -n 5
cd $R || exit 0
tar czf $OUT/train.tgz progress driver.log *.log */train_log.jsonl */summary.json */data_stats.json */train_config.json \
    */plan.json 2>/dev/null
tar czf $OUT/select.tgz --exclude=rows.jsonl select-* speed gpu_mem.log 2>/dev/null
for d in test/*; do  # one file per test set: each must stay under 16 MiB
  [ -d "$d" ] && tar czf $OUT/evals-${d#test/}.tgz --exclude=rows.jsonl "$d"
done
[ -d rear-chosen ] && tar czf $OUT/rear.tgz rear-chosen
ls -la $OUT
