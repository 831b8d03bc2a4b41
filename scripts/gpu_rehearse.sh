#!/usr/bin/env bash
# CPU rehearsal of the GPU driver (scripts/gpu_stage.py, gpu_unit.sh, gpu_plan.py), with a tiny
# model, before any device time depends on it. Every planned call runs as the device tool would
# run it: in a fresh copy of the repo holding only the travelling tree (tracked and
# untracked-not-ignored files) and the call's carry paths, with a fresh empty $OUT, while the
# "machine" (GPU_ROOT: keep/, staged/, site/, rhome/, runs/, as /tmp there) persists from call to
# call as within one loan. $OUT is checked against the tool's limits (8 files, 16 MiB each, 2
# folders down, plain names) and collected like the real replies (gpu_plan.py collect).
# Scenario: a corrupt part is refused; the recipe plan runs until its first REAR unit is done;
# the machine is then lost (GPU_ROOT wiped) and the plan, re-made from what came back, re-stages
# and finishes; a done unit re-sent; then the protocol plan (both REAR heads, rag-ft and
# closed-book-ft, every test unit, the untuned readers) from the warm machine (--staged), its
# later sessions each on a bare machine (so the test units get their checkpoints from the
# carried archives); at the end both plans must have nothing left. The units are CPU-sized (gpu_plan.py --rehearse:
# the tiny base model .gpu/tiny-base carried in every call, 2-3 training steps, 2 questions).
# Usage (repo root; the GGUF and snapshot as gpu_stage.py build takes them):
#   bash scripts/gpu_rehearse.sh [BUNDLE_DIR]      (REHEARSE_DIR, default /tmp/rearqa-rehearse)
#   REHEARSE_ONLY=protocol bash scripts/gpu_rehearse.sh   the protocol plan (seed 0) alone
# Needs a python3 with torch/transformers/peft on PATH (PYBIN, default the one `python` is).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
BUNDLE=${1:-build/bundle}
PYBIN=${PYBIN:-$(dirname "$(command -v python)")}
export PATH="$PYBIN:$PATH"  # python3 is the venv's, as python3 is torch's on the machine
W=${REHEARSE_DIR:-/tmp/rearqa-rehearse}
MACHINE=$W/machine RUNS=$W/runs
rm -rf "$W" && mkdir -p "$W" "$RUNS"
T_START=$(date +%s)
log() { echo "[$(date +%T)] $*"; }
fail() { echo "REHEARSAL FAILED: $*"; exit 1; }

log "0. the paths no unit reads are parked for the rehearsal (scripts/gpu_park.py), as for a loan"
python3 scripts/gpu_park.py park
trap 'python3 scripts/gpu_park.py unpark' EXIT

log "1. staging here: python3 scripts/gpu_stage.py build --bundle $BUNDLE"
python3 scripts/gpu_stage.py build --bundle "$BUNDLE"

log "2. the tiny base model (.gpu/tiny-base: SmolLM2's tokenizer, a 2-layer Llama of width 32)"
python3 - <<'PY'
import torch
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
from rearqa.assets import reader_model_dir

src = reader_model_dir()
cfg = AutoConfig.from_pretrained(src)
for key, value in dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16).items():
    setattr(cfg, key, value)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg)
model.save_pretrained(".gpu/tiny-base", safe_serialization=True)
AutoTokenizer.from_pretrained(src).save_pretrained(".gpu/tiny-base")
print("tiny base:", sum(p.numel() for p in model.parameters()), "parameters")
PY

# bench_train.py is being written elsewhere: until it is in the tree, a stand-in (outside the
# tree, named by BENCH_SCRIPT) lets the bench unit and its packing run.
if [ ! -f scripts/bench_train.py ]; then
  export BENCH_SCRIPT=$W/bench_stub.py
  cat > "$BENCH_SCRIPT" <<'PY'
import json, os, sys, pathlib
d = pathlib.Path(os.environ["UNIT_DIR"])
(d / "bench.json").write_text(json.dumps({"stand_in": True, "args": sys.argv[1:]}) + "\n")
print("bench stand-in:", sys.argv[1:])
PY
  log "   scripts/bench_train.py is not here: the bench unit runs a stand-in ($BENCH_SCRIPT)"
fi

N=0
# One device call: CARRY (JSON list) COMMAND [CORRUPT=path to damage in the copy]
device_call() {
  local carry=$1 cmd=$2 corrupt=${3:-}
  N=$((N + 1))
  local d=$W/call-$N; mkdir -p "$d/repo" "$d/out"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -f "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf - | tar -xf - -C "$d/repo"
  local c
  for c in $(python3 -c 'import json,sys; print(" ".join(json.loads(sys.argv[1])))' "$carry"); do
    if [ -e "$c" ]; then cp -r --parents "$c" "$d/repo/"; else echo "   (not carried, absent here: $c)"; fi
  done
  [ -n "$corrupt" ] && printf 'X' | dd of="$d/repo/$corrupt" bs=1 seek=4096 conv=notrunc 2>/dev/null
  local size; size=$(du -sb "$d/repo" | cut -f1)
  [ "$size" -le $((64 << 20)) ] || fail "call $N carries $((size >> 20)) MiB, over 64 MiB"
  local t0 rc; t0=$(date +%s)
  set +e
  (cd "$d/repo" && OUT=$d/out GPU_ROOT=$MACHINE timeout 600 bash -c "$cmd") > "$d/log" 2>&1
  rc=$?
  set -e
  local n_files; n_files=$(find "$d/out" -type f | wc -l)
  [ "$n_files" -le 8 ] || fail "call $N: $n_files files in \$OUT (at most 8 come back)"
  find "$d/out" -type f -size +16M > "$d/big"; [ -s "$d/big" ] && fail "call $N: a file over 16 MiB in \$OUT"
  find "$d/out" -mindepth 3 -type f > "$d/deep"; [ -s "$d/deep" ] && fail "call $N: a file more than 2 folders down"
  find "$d/out" -mindepth 1 | sed "s#^$d/out/##" | grep -v '^[A-Za-z0-9._/-]*$' && fail "call $N: odd names in \$OUT"
  log "call $N: rc $rc, $(( $(date +%s) - t0 )) s, carried $((size >> 20)) MiB ${carry}; \$OUT: $(cd "$d/out" && ls | tr '\n' ' ')"
  echo "   \$ $cmd"
  grep -E '^(STATUS|RESULT|stage: REFUSED|unit .*budget)' "$d/log" | tail -n 4 | sed 's/^/   /'
  python3 scripts/gpu_plan.py collect "$d/out" "$RUNS" | sed 's/^/   collect: /'
  rm -rf "$d/repo"
  LAST_RC=$rc LAST_LOG=$d/log
}

run_plan() {  # PLAN ARGS...: every call of the plan (gpu_plan.py --json --rehearse), in order
  local json=$W/plan-$N.json stop=${STOP_AFTER:-}
  python3 scripts/gpu_plan.py "$@" --rehearse --json > "$json"
  python3 scripts/gpu_plan.py "$@" --rehearse | sed 's/^/   plan: /'
  local i n session last_session=0; n=$(python3 -c 'import json,sys; print(sum(len(s["calls"]) for s in json.load(open(sys.argv[1]))["sessions"]))' "$json")
  for ((i = 0; i < n; i++)); do
    local carry cmd unit
    session=$(python3 -c 'import json,sys; print([k for k, s in enumerate(json.load(open(sys.argv[1]))["sessions"]) for c in s["calls"]][int(sys.argv[2])])' "$json" $i)
    if [ "$session" != "$last_session" ]; then  # a later session starts a bare machine
      log "   plan session $((session + 1)): a new session, a bare machine ($MACHINE wiped)"
      rm -rf "$MACHINE"; last_session=$session
    fi
    carry=$(python3 -c 'import json,sys; c=[c for s in json.load(open(sys.argv[1]))["sessions"] for c in s["calls"]][int(sys.argv[2])]; print(json.dumps(c["carry"]))' "$json" $i)
    cmd=$(python3 -c 'import json,sys; c=[c for s in json.load(open(sys.argv[1]))["sessions"] for c in s["calls"]][int(sys.argv[2])]; print(c["command"])' "$json" $i)
    unit=$(python3 -c 'import json,sys; c=[c for s in json.load(open(sys.argv[1]))["sessions"] for c in s["calls"]][int(sys.argv[2])]; print(c["unit"] or "")' "$json" $i)
    device_call "$carry" "$cmd"
    if [ -n "$unit" ] && [ "$LAST_RC" != 0 ]; then fail "unit $unit: rc $LAST_RC (log $LAST_LOG)"; fi
    if [ -n "$stop" ] && [ "$unit" = "$stop" ]; then return 0; fi
  done
  return 0
}

if [ "${REHEARSE_ONLY:-}" = protocol ]; then  # the protocol plan alone, from a bare machine
  log "3-7. (REHEARSE_ONLY=protocol) the protocol plan for seed 0 from a bare machine"
  run_plan protocol --seeds 0 --runs "$RUNS"
  left=$(python3 scripts/gpu_plan.py protocol --seeds 0 --rehearse --runs "$RUNS" --json | python3 -c 'import json,sys; print(sum(len(s["calls"]) for s in json.load(sys.stdin)["sessions"]))')
  [ "$left" = 0 ] || fail "protocol still plans $left calls"
  log "REHEARSAL (protocol only) PASSED in $(( $(date +%s) - T_START )) s ($N calls; logs under $W/call-*/log)"
  exit 0
fi

log "3. a corrupt part is refused (one byte of .gpu/p1's GGUF chunk changed in the copy)"
device_call '[".gpu/p1"]' "bash scripts/gpu_unit.sh status" ".gpu/p1/SmolLM2-135M-Instruct.Q4_1.gguf.000"
[ "$LAST_RC" = 3 ] && grep -q "REFUSED .gpu/p1" "$LAST_LOG" && [ ! -d "$MACHINE/keep/p1" ] \
    || fail "the corrupt part was not refused (rc $LAST_RC)"
log "   refused, nothing kept: ok"

# the session-5 shape: a unit's own -c, and a --set copy of that config (not of $CFG)
RECIPE=(recipe --rear A="-c configs/train/gpu-fast.yaml --seed 0"
        --rear B="-c configs/train/gpu-fast.yaml --seed 1 --set judgment_loss=none"
        --bench-args "--steps 3 --out @UNIT_DIR@")
log "4. recipe plan until train-rear-A is done"
STOP_AFTER=train-rear-A run_plan "${RECIPE[@]}"
unit_tgz=$RUNS/train-rear-A.tgz
[ -f "$unit_tgz" ] || fail "no train-rear-A.tgz came back"
tar tzf "$unit_tgz" > "$W/members.txt"
grep -q "^train-rear-A/chosen/adapter/adapter_model.safetensors$" "$W/members.txt" || fail "no adapter in train-rear-A.tgz"

log "5. the machine is lost: $MACHINE wiped; the plan again from what came back (--runs)"
rm -rf "$MACHINE"
run_plan "${RECIPE[@]}" --runs "$RUNS"

tar xzf "$RUNS/train-rear-B.tgz" -O train-rear-B/config.yaml > "$W/b-config.yaml" 2>/dev/null \
    || fail "train-rear-B.tgz holds no config.yaml (the --set copy)"
grep -q "^judgment_loss: none" "$W/b-config.yaml" && grep -q "^head_lr: 0.002" "$W/b-config.yaml" \
    || fail "train-rear-B's config is not gpu-fast.yaml with judgment_loss none: $(cat "$W/b-config.yaml")"
log "   train-rear-B trained on a copy of its own -c with the --set key: ok"

log "6. a done unit asked again on the same machine sends its archive again"
device_call '[]' "bash scripts/gpu_unit.sh train-rear B"
[ "$LAST_RC" = 0 ] && grep -q "archive sent again" "$LAST_LOG" || fail "train-rear B was not re-sent"

log "7. protocol plan (seed 0) on the warm machine (--staged): REAR heads, baselines, tests"
run_plan protocol --seeds 0 --runs "$RUNS" --staged

log "8. nothing left in either plan"
for p in "recipe" "protocol"; do
  if [ $p = recipe ]; then a=("${RECIPE[@]}"); else a=(protocol --seeds 0); fi
  left=$(python3 scripts/gpu_plan.py "${a[@]}" --rehearse --runs "$RUNS" --json | python3 -c 'import json,sys; print(sum(len(s["calls"]) for s in json.load(sys.stdin)["sessions"]))')
  [ "$left" = 0 ] || fail "$p still plans $left calls"
done
python3 - "$RUNS" <<'PY'
import json, sys, tarfile
from pathlib import Path
runs = Path(sys.argv[1])
for f in sorted(runs.glob("*.tgz")):
    with tarfile.open(f) as t:
        names = t.getnames()
        u = json.load(t.extractfile(f"{f.stem}/unit.json"))
    print(f"   {f.name:34s} {f.stat().st_size / 1024:8.0f} KiB  {u['status']:7s} {u.get('seconds', '?'):>4} s  "
          f"{len(names)} members{'  chosen/ bf16' if any('/chosen/' in n for n in names) else ''}")
PY
log "REHEARSAL PASSED in $(( $(date +%s) - T_START )) s ($N calls; calls' logs under $W/call-*/log)"
