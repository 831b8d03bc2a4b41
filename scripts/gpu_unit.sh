#!/usr/bin/env bash
# Start of every GPU-machine call (device tool), from the repo root there:
#   bash scripts/gpu_unit.sh [--budget S] [--id ID] UNIT [ARGS...]
# (a) keeps each carried part .gpu/pK in /tmp/keep after checking its MANIFEST (a corrupt part
#     is refused, with a message, and nothing of it kept); (b) once the parts holding them are
#     kept, reassembles and checks the GGUF, the wheels and the snapshot (/tmp/staged), installs
#     the wheels (/tmp/site) and converts the GGUF to the reader checkpoint (REARQA_HOME=
#     /tmp/rhome, rearqa.assets.prepare_reader), each once per machine; (c) prints one STATUS line
#     (parts kept/missing, env ready or not, what to carry next); (d) runs UNIT when the env is
#     ready, under `timeout` (S = --budget, default 540, cut to what is left of the call), packs
#     its results into $OUT/ID.tgz (one file, <= 15 MiB: logs, JSON, reports, bf16 adapters) and
#     marks it in $OUT/units.json (every unit this machine ran: done | partial | timeout | failed).
# Units (ID in brackets):
#   status                                      nothing but (a)-(c)
#   bench [ARGS]                    [bench]     python3 scripts/bench_train.py ARGS (@UNIT_DIR@ in
#                                               ARGS becomes the unit's dir, also $UNIT_DIR)
#   train-rear NAME [--set K=V]... [TRAIN ARGS] [train-rear-NAME]
#       python3 -m rearqa.app.train_cmd rear -c $CFG --snapshot ... --out /tmp/runs/ID/train
#       [TRAIN ARGS] (--set K=V: a copy of $CFG with key K set, e.g. --set lr=1e-4; a -c in TRAIN
#       ARGS replaces $CFG, --set keys included), then the dev-select choice (python3 -m rearqa.eval.select, as
#       scripts/gpu_run.sh), the chosen checkpoint compacted to bf16 as chosen/
#   train-baseline METHOD NAME SEED BUDGET [--set K=V]... [TRAIN ARGS] [train-baseline-NAME]
#       rag-ft | closed-book-ft for BUDGET tokens (0: the config's steps), 128 examples a step in
#       one micro-batch; dev-select choice of checkpoint (and k in $RAG_KS for rag-ft)
#   eval-test NAME                  [eval-test-NAME]  the test sets ($TESTS) with the chosen
#       checkpoint of train-rear-NAME or train-baseline-NAME: from this machine's /tmp/runs when
#       it ran there, else from the archive .gpu/in/train-*-NAME.tgz carried in this call or an
#       earlier one on this machine (kept in /tmp/in; gpu_plan.py collect puts it in .gpu/in)
#   eval-untuned                    [eval-untuned]    closed-book and rag (k = 5) on $TESTS
#   eval-mla SOURCE R+D...          [eval-mla-SOURCE] TransMLA (docs/backbone.md): SOURCE's reader (a
#       train-baseline NAME: its chosen rag-ft adapter, merged; or `base`: the untuned rag reader at
#       k = 5) converted at each kv_lora_rank+rope setting with the carried calibration ids
#       (.gpu/in/transmla-calib.json), then SOURCE's reader as it is and each conversion evaluated
#       on the answerable questions of $MLA_TESTS, one reader after another, into $UD/<setting>/
#   distill SOURCE SETTING TRAINABLES BUDGET [--set K=V]... [distill-SOURCE-SETTING-TRAINABLES]
#       issue 12's heal: SOURCE (as eval-mla) converted at SETTING (RANK+ROPE TransMLA from the
#       carried calibration ids, xRANK+ROPE X-EcoMLA, kvN KV-head merging to N heads from the
#       calibration ids: issue 13), then for each of TRAINABLES (comma list of
#       lora | attention | new) `rearqa train distill` ($DISTILL_CFG, configs/train/distill-gpu.yaml,
#       lr by heal_lr) for BUDGET tokens (a time share of the call as the safety net); the one
#       with the lowest KL to the teacher on held-out dev-select rag-ft prompts (scripts/
#       distill_kl.py, $KL_PER_SPLIT of each of $SEL_SPLITS) is chosen, a chosen lora adapter kept
#       bf16 as chosen/; then each one's dev-select EM (rear_eval, SOURCE's prompt, $SEL_LIMIT of
#       each split; lora merged first) as time allows. DISTILL_CONTROLS=1 scores the teacher and
#       the unhealed conversion too. fingerprint.json, */probe*.json: what a CPU rebuild is
#       checked against (gpu_units.py probe). EXTRACT_RANK=R: a chosen full-weight heal (new,
#       attention) is shipped as its update truncated to a rank-R LoRA (gpu_units.py
#       extract-lora; its dev-select KL too); SKIP_SELECT_EM=1: no dev-select EM
#   eval-healed DISTILL_ID                      [eval-healed-...] the healed reader the distill unit
#       DISTILL_ID chose (lora: merged into the conversion; from .gpu/in/DISTILL_ID.tgz when it ran
#       on another machine) on the answerable questions of $MLA_TESTS; HEALED_CONTROLS=1 the
#       unhealed conversion too
#   loraprune SOURCE KV MLP BUDGET [--set K=V]...  [loraprune-SOURCE-KV-MLP] issue 13: SOURCE's reader
#       (as eval-mla) pruned by `rearqa train loraprune` ($LORAPRUNE_CFG, configs/train/
#       loraprune-gpu.yaml) to KV groups and MLP channels per layer for BUDGET tokens (stopped by
#       the call's time: the unit resumes when run again); chosen/ = the LoRA over the pruned
#       reader (bf16) + mask.json; the pruned reader (gpu_units.py prune) and it healed: their
#       dev-select KL to SOURCE's reader, fingerprint.json, then the healed one on the answerable
#       questions of $MLA_TESTS (SKIP_TESTS=1: not)
#   eval-order NAME ORDER...        [eval-order-NAME] issue 14: NAME's reader (a train-baseline or
#       train-rear unit, as eval-mla) on the answerable questions of $MLA_TESTS with its passages
#       in each ORDER (retrieval | reversed | shuffled:SEED), one after another into $UD/<order>/
#   eval-spatten NAME SPLITS BUDGET...  [eval-spatten-NAME] issue 14: NAME's rag / rag-ft reader on the
#       answerable questions of SPLITS ("nq-dev-select:500 tqa-dev-select:500", as $TESTS) with
#       each SpAtten BUDGET (spatten:tokens=0.6,...; none: without) into $UD/<budget>/
# Re-running a unit on the same machine resumes it (training from its newest checkpoint, a
# finished step is not redone) or, when it is done, sends its archive again.
# Exit: 0 the unit is done (or status with the env ready); 3 a part was refused; 4 env not
# ready (the unit was not run); 5 the unit ran but is not done (see units.json).
# Settings (environment): GPU_ROOT (/tmp: keep, staged, site, rhome, runs under it), PY
# (python3), CFG (configs/train/gpu.yaml), BASE_MODEL (a base checkpoint dir for train, select
# and eval; default the converted SmolLM2), SEL_LIMIT (500 questions of each dev-select split),
# SEL_SPLITS, SEL_ARGS, SELECT_MID (1: mid checkpoints are candidates too), RAG_KS ("1 3 5"),
# TESTS ("nq-test:0 tqa-test:3000 squad-test:1000", split:limit, 0 = all), EVAL_ARGS,
# TEST_PARALLEL (1: the test sets side by side), MLA_TESTS ("nq-test:0 tqa-test:3000"), CALL_LIMIT (590 s from the start of this script),
# PACK_RESERVE (25 s kept for packing), SELECT_RESERVE (150 s kept for dev-select after training).
set -uo pipefail
T0=$(date +%s)
G=${GPU_ROOT:-/tmp}
KEEP=$G/keep STAGED=$G/staged SITE=$G/site RHOME=$G/rhome RUNS=$G/runs
export PY=${PY:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src:$SITE:$STAGED/llm" REARQA_HOME=$RHOME BUNDLE=$STAGED/bundle
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export CFG=${CFG:-configs/train/gpu.yaml} SEL_LIMIT=${SEL_LIMIT:-500} SEL_ARGS=${SEL_ARGS:-}
export SEL_SPLITS=${SEL_SPLITS:-nq-dev-select tqa-dev-select} SELECT_MID=${SELECT_MID:-0}
export RAG_KS=${RAG_KS:-1 3 5} TESTS=${TESTS:-nq-test:0 tqa-test:3000 squad-test:1000}
export MLA_TESTS=${MLA_TESTS:-nq-test:0 tqa-test:3000}
export EVAL_ARGS=${EVAL_ARGS:-} TEST_PARALLEL=${TEST_PARALLEL:-1} SELECT_RESERVE=${SELECT_RESERVE:-150}
U() { $PY scripts/gpu_units.py "$@"; }

# ------------------------------------------------------------------------------- unit bodies
# Run as `bash gpu_unit.sh --body ID UNIT ARGS` under timeout; $UD is the unit's dir.
left() { echo $(( UNIT_DEADLINE - $(date +%s) )); }
base_args() { [ -n "${BASE_MODEL:-}" ] && echo "--base-model $(realpath "$BASE_MODEL")"; }

split_sets() {  # "--set K=V" pairs into SETS, a -c/--config into UNIT_CFG, the rest into ARGS
  SETS=() ARGS=() UNIT_CFG=$CFG
  while [ $# -gt 0 ]; do
    case $1 in
      --set) [ $# -ge 2 ] || { ARGS+=("$1"); shift; continue; }; SETS+=("$2"); shift 2 ;;
      -c|--config) [ $# -ge 2 ] || { ARGS+=("$1"); shift; continue; }; UNIT_CFG=$2; shift 2 ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}

unit_config() {  # the training config: the unit's -c (else $CFG), or a copy with --set keys
  if [ ${#SETS[@]} -gt 0 ]; then
    U config "$UNIT_CFG" "$UD/config.yaml" "${SETS[@]}" >&2 || return 1
    echo "$UD/config.yaml"
  else
    echo "$UNIT_CFG"
  fi
}

train_run() {  # METHOD CONFIG EXTRA...: train into $UD/train unless final/ is there
  local method=$1 cfg=$2; shift 2
  [ -d "$UD/train/final" ] && { echo "train: $UD/train/final exists (trained in an earlier call)"; return 0; }
  local tl=$(( $(left) - SELECT_RESERVE )) extra=()
  [[ " ${ARGS[*]} " == *" --time-limit "* ]] || extra=(--time-limit $tl)
  [ $tl -gt 20 ] || { echo "train: only $(left) s left, not enough to train: run the unit again"; return 75; }
  echo "train: $method ($cfg) $* ${ARGS[*]} ${extra[*]}"
  local t0=$SECONDS
  $PY -m rearqa.app.train_cmd "$method" -c "$cfg" --snapshot "$BUNDLE" --out "$UD/train" --quiet \
      $(base_args) "$@" "${ARGS[@]}" "${extra[@]}" >> "$UD/train.log" 2>&1
  local rc=$?
  tail -n 4 "$UD/train.log"
  echo "train: the process took $(( SECONDS - t0 )) s (start, data, model, steps, saving)"
  [ $rc = 0 ] || { echo "train: FAILED (rc $rc), see train.log"; return 1; }
  [ -d "$UD/train/final" ] || { echo "train: stopped at its time limit, checkpoint kept: run the same unit again (same machine) to resume"; return 75; }
}

candidates() {  # final (and the kept mid checkpoints with SELECT_MID=1)
  echo "$UD/train/final"
  if [ "$SELECT_MID" = 1 ]; then
    for c in "$UD"/train/checkpoints/step-*/model; do [ -d "$c" ] && echo "$c"; done
  fi
}

select_run() {  # --METHOD and its options for rearqa.eval.select
  [ -f "$UD/select/selection.json" ] && { echo "select: done in an earlier call"; return 0; }
  [ $(left) -gt 30 ] || { echo "select: only $(left) s left: run the unit again"; return 75; }
  echo "select: $* (limit $SEL_LIMIT of $SEL_SPLITS)"
  local t0=$SECONDS
  $PY -m rearqa.eval.select --snapshot "$BUNDLE" --splits $SEL_SPLITS --limit "$SEL_LIMIT" \
      --batch-size 64 --out "$UD/select" "$@" $(base_args) $SEL_ARGS > "$UD/select.log" 2>&1
  local rc=$?
  tail -n 12 "$UD/select.log"
  echo "select: took $(( SECONDS - t0 )) s"
  [ $rc = 0 ] || { echo "select: FAILED (rc $rc)"; rm -f "$UD/select/selection.json"; return 1; }
}

keep_chosen() {  # CHECKPOINT KIND(rear|adapter): a bf16 copy as $UD/chosen
  rm -rf "$UD/chosen" "$UD/chosen.tmp" && cp -r "$1" "$UD/chosen.tmp" || return 1
  if [ "$2" = rear ]; then
    $PY -c "import sys; from rearqa.reader.rear.checkpoint import compact_checkpoint as c; print(c(sys.argv[1]))" "$UD/chosen.tmp" || return 1
  else
    U compact-adapter "$UD/chosen.tmp" || return 1
  fi
  mv "$UD/chosen.tmp" "$UD/chosen"
  echo "chosen: ${1#$UD/} -> chosen/ (bf16, $(du -sh "$UD/chosen" | cut -f1))"
}

body_train_rear() {
  local name=$1; shift
  split_sets "$@"
  local cfg; cfg=$(unit_config) || return 2
  U note "$UD/unit.json" kind=train-rear method=rear name="$name" k="${REAR_K:-20}" \
      config="$cfg" "args=${ARGS[*]}" "sets=${SETS[*]}"
  train_run rear "$cfg" || return $?
  local cands; mapfile -t cands < <(candidates)
  select_run --rear "${cands[@]}" --rear-k "${REAR_K:-20}" || return $?
  local ck; ck=$(U chosen "$UD/select/selection.json" rear checkpoint) || return 1
  [ -f "$UD/chosen/rear_config.json" ] || keep_chosen "$ck" rear || return 1
  U note "$UD/unit.json" chosen_from="${ck#$UD/}" \
      "selection=$($PY -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["rear"]["chosen"]))' "$UD/select/selection.json")"
}

body_train_baseline() {
  local method=$1 name=$2 seed=$3 budget=$4; shift 4
  case $method in
    # One process on the GPU, so one micro-batch a step (the fast loop, docs/benchmarks.md (e)):
    # 16 x 8 = 128 examples, as run 2's optimiser step (rag-ft: 47k tokens, 67 GiB measured).
    rag-ft) local micro=(--batch 16 --grad-accum 1) sel=(--rag-ft-k $RAG_KS) ;;
    closed-book-ft) local micro=(--batch 16 --grad-accum 1) sel=() ;;
    *) echo "train-baseline: METHOD is rag-ft or closed-book-ft, not $method"; return 2 ;;
  esac
  split_sets "$@"
  local cfg; cfg=$(unit_config) || return 2
  U note "$UD/unit.json" kind=train-baseline method="$method" name="$name" seed="$seed" \
      budget="$budget" config="$cfg" "args=${ARGS[*]}" "sets=${SETS[*]}"
  train_run "$method" "$cfg" --seed "$seed" --token-budget "$budget" "${micro[@]}" || return $?
  local cands; mapfile -t cands < <(candidates)
  select_run "--$method" "${cands[@]}" "${sel[@]}" || return $?
  local ad k; ad=$(U chosen "$UD/select/selection.json" "$method" adapter) || return 1
  k=$(U chosen "$UD/select/selection.json" "$method" k) || return 1
  [ -f "$UD/chosen/adapter_config.json" ] || keep_chosen "$ad" adapter || return 1
  U note "$UD/unit.json" chosen_from="${ad#$UD/}" k="$k"
}

run_tests() {  # METHODS K MODEL-ARGS...: rear_eval on every $TESTS split into $TEST_OUT/<split>
  local methods=$1 k=$2 out=${TEST_OUT:-$UD}; shift 2
  mkdir -p "$out"
  [ -f "$BUNDLE/meta.json" ] && $PY scripts/gpu_stage.py ready --keep "$KEEP" --staged "$STAGED" bundle/ \
      || { echo "eval: the test splits are not staged: carry the test part (STATUS says which)"; return 2; }
  local pids=() splits=() spec split lim failed=0 t0=$SECONDS
  for spec in $TESTS; do
    split=${spec%%:*} lim=${spec#*:}
    local a=(--snapshot "$BUNDLE" --split "$split" --methods $methods --k "$k" --batch-size 64 --out "$out/$split")
    [ "$lim" != 0 ] && [ "$lim" != "$split" ] && a+=(--limit "$lim")
    [ -f "$BUNDLE/${split%-test}-dev-select.jsonl.gz" ] || a+=(--calibration-split none)
    echo "eval: $split ($methods, k=$k${lim:+, limit $lim})"
    if [ "$TEST_PARALLEL" = 1 ]; then
      $PY -m rearqa.eval.rear_eval "${a[@]}" "$@" $(base_args) $EVAL_ARGS > "$out/eval-$split.log" 2>&1 &
      pids+=($!) splits+=("$split")
    else
      $PY -m rearqa.eval.rear_eval "${a[@]}" "$@" $(base_args) $EVAL_ARGS > "$out/eval-$split.log" 2>&1
      local rc=$?; echo "eval: $split rc $rc ($(( SECONDS - t0 )) s since the first split began)"; [ $rc = 0 ] || failed=1
    fi
  done
  local i
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; local rc=$?; echo "eval: ${splits[$i]} rc $rc ($(( SECONDS - t0 )) s since the splits began)"; [ $rc = 0 ] || failed=1
  done
  [ $failed = 0 ] || { for f in "$out"/eval-*.log; do echo "== $f"; tail -n 5 "$f"; done; return 1; }
}

trained_unit() {  # NAME: the dir of train-rear-NAME or train-baseline-NAME (run here or carried)
  local name=$1 src="" d
  for d in "$RUNS/train-rear-$name" "$RUNS/train-baseline-$name"; do
    [ -f "$d/unit.json" ] && [ -d "$d/chosen" ] && src=$d
  done
  if [ -z "$src" ]; then
    local tgz; tgz=$(ls "$G"/in/train-rear-"$name".tgz "$G"/in/train-baseline-"$name".tgz 2>/dev/null | head -n 1)
    [ -n "$tgz" ] || { echo "no checkpoint for $name on this machine and none carried: carry .gpu/in/train-rear-$name.tgz (scripts/gpu_plan.py collect puts it there)" >&2; return 2; }
    local id; id=$(basename "$tgz" .tgz)
    tar xzf "$tgz" -C "$RUNS" || { echo "$tgz is unreadable" >&2; return 2; }
    [ -d "$RUNS/$id/chosen" ] || { echo "$tgz holds no chosen/ checkpoint" >&2; return 2; }
    src=$RUNS/$id
    echo "checkpoint from the carried $tgz" >&2
  fi
  echo "$src"
}

body_eval_test() {
  local name=$1 src
  src=$(trained_unit "$name") || return 2
  local method k; method=$(U get "$src/unit.json" method) k=$(U get "$src/unit.json" k)
  U note "$UD/unit.json" kind=eval-test name="$name" method="$method" k="$k" from="$(basename "$src")"
  if [ "$method" = rear ]; then
    run_tests rear "$k" --checkpoint "$src/chosen"
  else
    run_tests "$method" "$k" "--adapter-$method" "$src/chosen"
  fi
}

mla_source() {  # NAME: sets method, k, from (the reader to convert), adapter (eval args), teacher
  local name=$1 src
  adapter=()
  if [ "$name" = base ]; then
    method=rag k=5 from=base teacher=base
  else
    src=$(trained_unit "$name") || return 2
    method=$(U get "$src/unit.json" method) k=$(U get "$src/unit.json" k) from=$src/chosen
    adapter=("--adapter-$method" "$src/chosen") teacher=$src/chosen
  fi
}

converted() {  # NAME FROM SETTING: the dir of FROM converted at SETTING (made once per machine)
  local name=$1 from=$2 setting=$3 calib=$G/in/transmla-calib.json dir
  [[ $setting =~ ^(x?[0-9]+\+[0-9]+|kv[0-9]+)$ ]] || { echo "setting $setting is not RANK+ROPE (TransMLA, 96+64), xRANK+ROPE (X-EcoMLA) or kvN (KV-head merging)" >&2; return 2; }
  [ -f "$calib" ] || { echo "no calibration ids: carry .gpu/in/transmla-calib.json (python scripts/transmla_calib.py --out .gpu/in/transmla-calib.json)" >&2; return 2; }
  dir=$G/mla/$name/$setting
  if [ ! -f "$dir/backbone.json" ]; then
    rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
    local t=$(date +%s)
    echo "convert: $from -> $setting" >&2
    OMP_NUM_THREADS=16 $PY scripts/gpu_units.py convert "$from" "$dir" "$setting" "$calib" \
        > "$UD/convert-$setting.log" 2>&1 || { tail -n 20 "$UD/convert-$setting.log" >&2; return 1; }
    echo "convert: $setting in $(( $(date +%s) - t )) s" >&2
  fi
  echo "$dir"
}

body_eval_mla() {  # SOURCE SETTING...: conversions of SOURCE evaluated beside it
  local name=$1; shift
  local method k from adapter teacher
  mla_source "$name" || return 2
  U note "$UD/unit.json" kind=eval-mla name="$name" method="$method" k="$k" "settings=$*" tests="$MLA_TESTS"
  local setting dir
  for setting in original "$@"; do
    dir=""
    if [ "$setting" != original ]; then
      dir=$(converted "$name" "$from" "$setting") || return $?
      mkdir -p "$UD/$setting" && cp "$dir"/backbone.json "$dir"/config.json "$dir"/*_report.json "$UD/$setting/" 2>/dev/null
    fi
    local t=$(date +%s)
    if [ -n "$dir" ]; then
      TESTS=$MLA_TESTS TEST_OUT=$UD/$setting BASE_MODEL=$dir run_tests "$method" "$k" --answerable-only || return 1
    else
      TESTS=$MLA_TESTS TEST_OUT=$UD/$setting run_tests "$method" "$k" --answerable-only "${adapter[@]}" || return 1
    fi
    echo "eval: $setting in $(( $(date +%s) - t )) s"
  done
}

heal_lr() {  # TRAINABLE: its learning rate (LR_<trainable> overrides)
  local var=LR_$1
  [ -n "${!var:-}" ] && { echo "${!var}"; return; }
  case $1 in lora) echo 3.0e-4 ;; new) echo 1.0e-4 ;; *) echo 5.0e-5 ;; esac
}

dev_select_score() {  # NAME METHOD K OUTDIR [MODEL-ARGS...]: rear_eval on $SEL_SPLITS (side by side) -> OUTDIR/score.json
  local name=$1 method=$2 k=$3 out=$4; shift 4
  [ -f "$out/score.json" ] && { echo "score: $name done in an earlier call: $(tr -d '\n ' < "$out/score.json")"; return 0; }
  local split dirs=() pids=() failed=0 i
  for split in $SEL_SPLITS; do
    $PY -m rearqa.eval.rear_eval --snapshot "$BUNDLE" --split "$split" --methods "$method" --k "$k" \
        --batch-size 64 --limit "$SEL_LIMIT" --calibration-split none --out "$out/$split" "$@" > "$out.$split.log" 2>&1 &
    pids+=($!) dirs+=("$out/$split")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { failed=1; tail -n 8 "$out.$(basename "${dirs[$i]}").log"; }
  done
  [ $failed = 0 ] || return 1
  echo -n "score: $name: "; U pooled "$out/score.json" "${dirs[@]}"
}

body_distill() {  # SOURCE SETTING TRAINABLES BUDGET [--set K=V]... [TRAIN ARGS]
  local name=$1 setting=$2 trainables=${3//,/ } budget=$4; shift 4
  local method k from adapter teacher conv
  mla_source "$name" || return 2
  conv=$(converted "$name" "$from" "$setting") || return $?
  split_sets "$@"
  local base_cfg=${DISTILL_CFG:-configs/train/distill-gpu.yaml}
  U note "$UD/unit.json" kind=distill name="$name" setting="$setting" method="$method" k="$k" \
      trainables="$trainables" budget="$budget" config="$base_cfg" "args=${ARGS[*]}" "sets=${SETS[*]}"
  mkdir -p "$UD/select"
  cp "$conv"/backbone.json "$UD/select/backbone-$setting.json"
  [ -f "$UD/fingerprint.json" ] || U probe "$conv" "$G/in/transmla-calib.json" "$UD/fingerprint.json" > "$UD/probe.log" 2>&1 || tail -n 5 "$UD/probe.log"
  if [ "${DISTILL_CONTROLS:-0}" = 1 ]; then  # the teacher on dev-select (the unhealed conversion: at the end)
    dev_select_score original "$method" "$k" "$UD/select/original" "${adapter[@]}" || return 1
  fi
  local tr n=0 total; total=$(wc -w <<< "$trainables")
  local specs=("$conv")  # distill_kl students: the unhealed conversion, then each candidate
  for tr in $trainables; do
    n=$((n + 1))
    local tud=$UD/$tr cfg
    mkdir -p "$tud"
    cfg=$(UD=$tud unit_config_for "$base_cfg" "distill_trainable=$tr" "lr=$(heal_lr "$tr")" "${SETS[@]}") || return 2
    if [ ! -d "$tud/train/final" ]; then
      # the safety net: this trainable's share of what is left, keeping ~SCORE_RESERVE s for the
      # scores; BUDGET (tokens, equal for all) is what is meant to end each run
      local tl=$(( ($(left) - ${SCORE_RESERVE:-150} - 40 * (total - n + 1)) / (total - n + 1) ))
      [ $tl -gt 30 ] || { echo "distill: only $(left) s left: run the unit again"; return 75; }
      echo "distill: $tr ($cfg) budget $budget tokens, time limit $tl s"
      $PY -m rearqa.app.train_cmd distill -c "$cfg" --snapshot "$BUNDLE" --out "$tud/train" --quiet \
          --student "$conv" --teacher "$teacher" --token-budget "$budget" --time-limit "$tl" \
          "${ARGS[@]}" >> "$tud/train.log" 2>&1
      local rc=$?
      tail -n 3 "$tud/train.log"
      [ $rc = 0 ] || { echo "distill: $tr FAILED (rc $rc), see $tr/train.log"; return 1; }
      if [ ! -d "$tud/train/final" ]; then  # stopped by its time limit: its newest checkpoint
        local last; last=$(ls -d "$tud"/train/checkpoints/step-*/model 2>/dev/null | tail -n 1)
        [ -n "$last" ] || { echo "distill: $tr stopped before a checkpoint"; return 75; }
        echo "distill: $tr stopped at its time limit; scoring $last"
        cp -r "$last" "$tud/train/final.tmp" && mv "$tud/train/final.tmp" "$tud/train/final"
      fi
    fi
    if [ "$tr" = lora ]; then specs+=("$conv@$tud/train/final"); else specs+=("$tud/train/final"); fi
  done
  # dev-select KL (held-out rag-ft prompts, the teacher loaded once): what chooses
  if [ ! -f "$UD/select/kl.json" ]; then
    $PY scripts/distill_kl.py --teacher "$teacher" --rows prompts --windows "${KL_PER_SPLIT:-128}" \
        --splits $SEL_SPLITS --snapshot "$BUNDLE" --max-len 1024 "${specs[@]/#/--student=}" \
        --json "$UD/select/kl.json" > "$UD/select/kl.log" 2>&1 || { tail -n 8 "$UD/select/kl.log"; return 1; }
  fi
  grep -v Loading "$UD/select/kl.log" | tail -n $(( total + 2 ))
  local chosen
  chosen=$(U best-kl "$UD/select/kl.json" "$conv" $trainables) || return 1
  U note "$UD/unit.json" chosen="$chosen"
  echo "chosen on dev-select (lowest KL): $chosen"
  if [ "$chosen" = lora ] && [ ! -f "$UD/chosen/adapter_config.json" ]; then
    keep_chosen "$UD/lora/train/final" adapter || return 1
  elif [ "$chosen" != lora ] && [ -n "${EXTRACT_RANK:-}" ] && [ ! -f "$UD/chosen/adapter_config.json" ]; then
    # the shippable form of a full-weight heal: its update as a rank-EXTRACT_RANK LoRA, and its KL
    rm -rf "$UD/chosen.tmp"
    U extract-lora "$conv" "$UD/$chosen/train/final" "$UD/chosen.tmp" "$EXTRACT_RANK" > "$UD/extract.log" 2>&1 \
        || { tail -n 5 "$UD/extract.log"; return 1; }
    tail -n 1 "$UD/extract.log"
    mv "$UD/chosen.tmp" "$UD/chosen"
    $PY scripts/distill_kl.py --teacher "$teacher" --rows prompts --windows "${KL_PER_SPLIT:-128}" \
        --splits $SEL_SPLITS --snapshot "$BUNDLE" --student="$conv@$UD/chosen" \
        --json "$UD/select/kl-extracted.json" > "$UD/select/kl-extracted.log" 2>&1 \
        || { tail -n 8 "$UD/select/kl-extracted.log"; return 1; }
    grep -v Loading "$UD/select/kl-extracted.log" | tail -n 1
    U note "$UD/unit.json" shipped="lora rank $EXTRACT_RANK extracted from $chosen"
  fi
  [ "${SKIP_SELECT_EM:-0}" = 1 ] && return 0
  # dev-select EM beside the KL (reported; the chosen one first)
  [ "${DISTILL_CONTROLS:-0}" = 1 ] && { dev_select_score unhealed "$method" "$k" "$UD/select/unhealed" --base-model "$conv" || return 1; }
  for tr in $chosen $(tr ' ' '\n' <<< "$trainables" | grep -vx "$chosen"); do
    [ $(left) -gt 45 ] || { echo "score: no time left for $tr's dev-select EM"; continue; }
    local cand=$UD/$tr/train/final
    if [ "$tr" = lora ]; then
      cand=$G/heal/$name-$setting-lora
      [ -f "$cand/backbone.json" ] || U merge-heal "$conv" "$UD/lora/train/final" "$cand" > "$UD/lora/merge.log" 2>&1 \
        || { tail -n 5 "$UD/lora/merge.log"; return 1; }
    fi
    dev_select_score "$tr" "$method" "$k" "$UD/$tr/select" --base-model "$cand" || return 1
    [ -f "$UD/$tr/probe.json" ] || U probe "$cand" "$G/in/transmla-calib.json" "$UD/$tr/probe.json" > "$UD/$tr/probe.log" 2>&1 || tail -n 5 "$UD/$tr/probe.log"
  done
}

unit_config_for() {  # BASE.yaml K=V...: a copy with the keys set, in $UD/config.yaml
  local base=$1; shift
  U config "$base" "$UD/config.yaml" "$@" >&2 || return 1
  echo "$UD/config.yaml"
}

body_eval_healed() {  # DISTILL_ID: the healed reader of that distill unit on $MLA_TESTS (answerable)
  local did=$1 dud=$RUNS/$1 tgz
  if [ ! -f "$dud/unit.json" ]; then  # not run on this machine: its carried archive
    tgz=$G/in/$did.tgz
    [ -f "$tgz" ] || { echo "eval-healed: $did did not run here and .gpu/in/$did.tgz was not carried"; return 2; }
    tar xzf "$tgz" -C "$RUNS" || { echo "$tgz is unreadable"; return 2; }
  fi
  local name setting chosen method k from adapter teacher conv healed
  name=$(U get "$dud/unit.json" name) setting=$(U get "$dud/unit.json" setting) chosen=$(U get "$dud/unit.json" chosen)
  mla_source "$name" || return 2
  conv=$(converted "$name" "$from" "$setting") || return $?
  if [ -f "$dud/chosen/adapter_config.json" ]; then  # lora, or a full-weight heal's extracted LoRA: what ships
    healed=$G/heal/$did-chosen
    [ -f "$healed/backbone.json" ] || U merge-heal "$conv" "$dud/chosen" "$healed" > "$UD/merge.log" 2>&1 \
        || { tail -n 5 "$UD/merge.log"; return 1; }
  else
    healed=$dud/$chosen/train/final
    [ -f "$healed/config.json" ] || { echo "eval-healed: $chosen's student is not on this machine (only lora results travel)"; return 2; }
  fi
  U note "$UD/unit.json" kind=eval-healed distill="$did" name="$name" setting="$setting" chosen="$chosen" method="$method" k="$k" tests="$MLA_TESTS"
  mkdir -p "$UD/healed" && cp "$healed/backbone.json" "$UD/healed/"
  local t=$(date +%s)
  TESTS=$MLA_TESTS TEST_OUT=$UD/healed BASE_MODEL=$healed run_tests "$method" "$k" --answerable-only || return 1
  echo "eval: healed $setting ($chosen) in $(( $(date +%s) - t )) s"
  if [ "${HEALED_CONTROLS:-0}" = 1 ]; then  # the unhealed conversion beside it
    mkdir -p "$UD/unhealed" && cp "$conv/backbone.json" "$UD/unhealed/"
    TESTS=$MLA_TESTS TEST_OUT=$UD/unhealed BASE_MODEL=$conv run_tests "$method" "$k" --answerable-only || return 1
  fi
}

body_loraprune() {  # SOURCE KV MLP BUDGET [--set K=V]... [TRAIN ARGS]: issue 13's LoRAPrune
  local name=$1 kv=$2 mlp=$3 budget=$4; shift 4
  local method k from adapter teacher
  mla_source "$name" || return 2
  split_sets "$@"
  local base_cfg=${LORAPRUNE_CFG:-configs/train/loraprune-gpu.yaml} final=$UD/train/final
  U note "$UD/unit.json" kind=loraprune name="$name" kv="$kv" mlp="$mlp" method="$method" k="$k" \
      budget="$budget" config="$base_cfg" "args=${ARGS[*]}" "sets=${SETS[*]}" tests="$MLA_TESTS"
  if [ ! -d "$final" ]; then
    local cfg tl=$(( $(left) - ${SCORE_RESERVE:-150} ))
    cfg=$(unit_config_for "$base_cfg" "${SETS[@]}") || return 2
    [ $tl -gt 30 ] || { echo "loraprune: only $(left) s left: run the unit again (it resumes)"; return 75; }
    echo "loraprune: $name to $kv KV groups + $mlp MLP channels, budget $budget tokens, time limit $tl s"
    $PY -m rearqa.app.train_cmd loraprune -c "$cfg" --snapshot "$BUNDLE" --out "$UD/train" --quiet \
        --teacher "$teacher" --kv-groups "$kv" --mlp-channels "$mlp" --token-budget "$budget" \
        --time-limit "$tl" "${ARGS[@]}" >> "$UD/train.log" 2>&1
    local rc=$?
    tail -n 3 "$UD/train.log"
    [ $rc = 0 ] || { echo "loraprune: FAILED (rc $rc), see train.log"; return 1; }
    [ -d "$final" ] || { echo "loraprune: stopped at its time limit before the end of the schedule; run the unit again (it resumes)"; return 75; }
  fi
  [ "$(U get "$final/loraprune.json" targets_reached)" = true ] || { echo "loraprune: the mask did not reach the targets"; return 1; }
  # what ships: the LoRA sliced to the pruned reader (bf16) with the mask and the schedule's record
  if [ ! -f "$UD/chosen/adapter_config.json" ]; then
    keep_chosen "$final" adapter || return 1
    rm -f "$UD"/chosen/tokenizer* "$UD"/chosen/special_tokens_map.json "$UD"/chosen/chat_template.jinja
  fi
  local conv=$G/pruned/$ID healed=$G/heal/$ID-chosen
  if [ ! -f "$conv/backbone.json" ]; then
    rm -rf "$conv"; mkdir -p "$(dirname "$conv")"
    U prune "$from" "$conv" "$final/mask.json" > "$UD/prune.log" 2>&1 || { tail -n 8 "$UD/prune.log"; return 1; }
  fi
  [ -f "$healed/backbone.json" ] || U merge-heal "$conv" "$UD/chosen" "$healed" > "$UD/merge.log" 2>&1 \
      || { tail -n 5 "$UD/merge.log"; return 1; }
  mkdir -p "$UD/select" "$UD/healed"
  cp "$conv/backbone.json" "$UD/select/backbone-pruned.json" && cp "$healed/backbone.json" "$UD/healed/"
  [ -f "$UD/fingerprint.json" ] || U probe "$conv" "$G/in/transmla-calib.json" "$UD/fingerprint.json" > "$UD/probe.log" 2>&1 || tail -n 5 "$UD/probe.log"
  if [ ! -f "$UD/select/kl.json" ]; then  # held-out dev-select KL to the unpruned reader
    $PY scripts/distill_kl.py --teacher "$teacher" --rows prompts --windows "${KL_PER_SPLIT:-128}" \
        --splits $SEL_SPLITS --snapshot "$BUNDLE" --max-len 1024 --student="$conv" --student="$healed" \
        --json "$UD/select/kl.json" > "$UD/select/kl.log" 2>&1 || { tail -n 8 "$UD/select/kl.log"; return 1; }
  fi
  grep -v Loading "$UD/select/kl.log" | tail -n 3
  [ "${SKIP_TESTS:-0}" = 1 ] && return 0
  local t=$(date +%s)
  TESTS=$MLA_TESTS TEST_OUT=$UD/healed BASE_MODEL=$healed run_tests "$method" "$k" --answerable-only || return 1
  echo "eval: pruned + healed in $(( $(date +%s) - t )) s"
}

body_eval_order() {  # NAME ORDER...: NAME's reader on $MLA_TESTS (answerable), passages in each ORDER
  local name=$1; shift
  local method k from adapter teacher order
  mla_source "$name" || return 2
  [ "$method" = rear ] && adapter=(--checkpoint "$from")
  U note "$UD/unit.json" kind=eval-order name="$name" method="$method" k="$k" "orders=$*" tests="$MLA_TESTS"
  for order in "$@"; do
    local od=$UD/${order/:/-}
    [ -f "$od/done" ] && { echo "eval: $order done in an earlier call"; continue; }
    local t=$(date +%s)
    TESTS=$MLA_TESTS TEST_OUT=$od run_tests "$method" "$k" --answerable-only --passage-order "$order" "${adapter[@]}" || return 1
    touch "$od/done"
    echo "eval: $name, passages $order, in $(( $(date +%s) - t )) s"
  done
}

body_eval_spatten() {  # NAME SPLITS BUDGET...: NAME's reader with each SpAtten BUDGET (none: without) on SPLITS
  local name=$1 splits=$2; shift 2
  local method k from adapter teacher b
  mla_source "$name" || return 2
  [ "$method" = rear ] && { echo "eval-spatten: SpAtten runs in the rag / rag-ft readers, not REAR's"; return 2; }
  U note "$UD/unit.json" kind=eval-spatten name="$name" method="$method" k="$k" "budgets=$*" splits="$splits"
  for b in "$@"; do
    local bd=$UD/$(tr ':=,' '-__' <<< "$b") extra=()
    [ "$b" = none ] || extra=(--backbone "$b")
    [ -f "$bd/done" ] && { echo "eval: $b done in an earlier call"; continue; }
    local t=$(date +%s)
    TESTS=$splits TEST_OUT=$bd run_tests "$method" "$k" --answerable-only "${extra[@]}" "${adapter[@]}" || return 1
    touch "$bd/done"
    echo "eval: $name with $b in $(( $(date +%s) - t )) s"
  done
}

body_eval_untuned() {
  U note "$UD/unit.json" kind=eval-untuned methods="closed-book rag" k=5
  run_tests "closed-book rag" 5
}

body_bench() {
  local script=${BENCH_SCRIPT:-scripts/bench_train.py}
  [ -f "$script" ] || { echo "bench: $script is not in this tree (not written yet?)"; return 2; }
  export UNIT_DIR=$UD
  local args=("${@//@UNIT_DIR@/$UD}")
  U note "$UD/unit.json" kind=bench script="$script" "args=${args[*]}"
  echo "bench: $PY $script ${args[*]}"
  set -o pipefail
  $PY "$script" "${args[@]}" 2>&1 | tee "$UD/bench.log" | tail -n 40
}

if [ "${1:-}" = --body ]; then
  ID=$2 UNIT=$3; shift 3
  UD=$RUNS/$ID; mkdir -p "$UD"
  case $UNIT in
    train-rear) body_train_rear "$@" ;;
    train-baseline) body_train_baseline "$@" ;;
    eval-test) body_eval_test "$@" ;;
    eval-untuned) body_eval_untuned ;;
    eval-mla) body_eval_mla "$@" ;;
    distill) body_distill "$@" ;;
    eval-healed) body_eval_healed "$@" ;;
    loraprune) body_loraprune "$@" ;;
    eval-order) body_eval_order "$@" ;;
    eval-spatten) body_eval_spatten "$@" ;;
    bench) body_bench "$@" ;;
    *) echo "unknown unit $UNIT"; exit 2 ;;
  esac
  exit $?
fi

# ------------------------------------------------------------------------------- the call
BUDGET=540 ID=""
while [ $# -gt 0 ]; do
  case $1 in
    --budget) BUDGET=$2; shift 2 ;;
    --id) ID=$2; shift 2 ;;
    *) break ;;
  esac
done
UNIT=${1:-status}; [ $# -gt 0 ] && shift
: "${OUT:?OUT is unset: this runs on the device machine (or set OUT for a rehearsal)}"
mkdir -p "$KEEP" "$STAGED" "$RUNS" "$OUT"
case $UNIT in
  status) ID=${ID:-status} ;;
  bench|eval-untuned) ID=${ID:-$UNIT} ;;
  train-rear|eval-test|eval-mla) [ $# -ge 1 ] || { echo "usage: $UNIT NAME ..."; exit 2; }; ID=${ID:-$UNIT-$1} ;;
  eval-healed) [ $# -ge 1 ] || { echo "usage: eval-healed DISTILL_ID"; exit 2; }; ID=${ID:-$UNIT-${1#distill-}} ;;
  distill) [ $# -ge 4 ] || { echo "usage: distill SOURCE SETTING TRAINABLES BUDGET ..."; exit 2; }; ID=${ID:-$UNIT-$1-${2/+/-}-${3//,/-}} ;;
  loraprune) [ $# -ge 4 ] || { echo "usage: loraprune SOURCE KV MLP BUDGET ..."; exit 2; }; ID=${ID:-$UNIT-$1-$2-$3} ;;
  eval-order) [ $# -ge 2 ] || { echo "usage: eval-order NAME ORDER..."; exit 2; }; ID=${ID:-$UNIT-$1} ;;
  eval-spatten) [ $# -ge 3 ] || { echo "usage: eval-spatten NAME SPLITS BUDGET..."; exit 2; }; ID=${ID:-$UNIT-$1} ;;
  train-baseline) [ $# -ge 4 ] || { echo "usage: train-baseline METHOD NAME SEED BUDGET ..."; exit 2; }; ID=${ID:-$UNIT-$2} ;;
  *) echo "unknown unit $UNIT: status | bench | train-rear | train-baseline | eval-test | eval-untuned | eval-mla | distill | eval-healed | loraprune | eval-order | eval-spatten"; exit 2 ;;
esac
[[ $ID =~ ^[A-Za-z0-9._-]+$ ]] || { echo "unit id $ID: letters, digits, . _ - only (the archive is \$OUT/ID.tgz)"; exit 2; }
[ -f "$G/machine-id" ] || echo "$(date +%Y%m%d-%H%M%S)-$RANDOM" > "$G/machine-id"
MACHINE=$(cat "$G/machine-id")
GPU_INFO=$(nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null | head -n 1)
GPU_NAME=${GPU_INFO%%,*}
echo "machine $MACHINE (GPU_ROOT $G), unit $UNIT ($ID), ${GPU_INFO:-no GPU}"

# (a) keep the carried parts, reassemble what is complete
parts=()
for d in .gpu/p*/; do [ -f "$d/MANIFEST" ] && parts+=("${d%/}"); done
$PY scripts/gpu_stage.py device --keep "$KEEP" --staged "$STAGED" "${parts[@]}"
stage_rc=$?
# Carried inputs (earlier units' archives, .gpu/in/*.tgz) are kept too, for later calls.
for f in .gpu/in/*.tgz .gpu/in/*.json; do
  [ -f "$f" ] || continue
  if [[ $f == *.json ]] && $PY -c "import json, sys; json.load(open(sys.argv[1]))" "$f" 2> /dev/null \
      || tar tzf "$f" > /dev/null 2>&1; then
    mkdir -p "$G/in" && cp "$f" "$G/in/.tmp" && mv "$G/in/.tmp" "$G/in/$(basename "$f")" && echo "stage: input $(basename "$f") kept"
  else
    echo "stage: REFUSED input $f: not a readable tar.gz or JSON; carry it again"; stage_rc=3
  fi
done
# (b) wheels, then the reader checkpoint (the conversion imports gguf from the wheels)
if [ ! -f "$SITE/.rearqa-wheels" ] && $PY scripts/gpu_stage.py ready --keep "$KEEP" --staged "$STAGED" whl/; then
  if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$STAGED"/whl/*.whl; then
    ls "$STAGED/whl" > "$SITE/.rearqa-wheels"; echo "env: wheels installed in $SITE: $(tr '\n' ' ' < "$SITE/.rearqa-wheels")"
  else
    echo "env: wheel install FAILED"
  fi
fi
if [ ! -f "$RHOME/.rearqa-reader" ] && [ -f "$SITE/.rearqa-wheels" ] \
    && $PY scripts/gpu_stage.py ready --keep "$KEEP" --staged "$STAGED" llm/; then
  t=$(date +%s)
  if $PY -c "import sys; from pathlib import Path; from rearqa.assets import prepare_reader; prepare_reader(Path(sys.argv[1]), False)" "$RHOME" > "$G/reader.log" 2>&1; then
    date > "$RHOME/.rearqa-reader"; echo "env: reader checkpoint made in $(( $(date +%s) - t )) s ($RHOME/models)"
  else
    echo "env: reader conversion FAILED:"; tail -n 8 "$G/reader.log"
  fi
fi
# (c) one STATUS line
status() { $PY scripts/gpu_stage.py status --keep "$KEEP" --staged "$STAGED" --site "$SITE" --rhome "$RHOME" \
               --units "$(U done "$RUNS/units.json")" --json "$OUT/status.json" | sed "s/^STATUS /STATUS machine=$MACHINE /"
          return "${PIPESTATUS[0]}"; }
status; env_rc=$?
send_units() { [ -f "$RUNS/units.json" ] && cp "$RUNS/units.json" "$OUT/units.json"; U note "$OUT/units.json" machine="$MACHINE" this_call="$ID" >/dev/null 2>&1 || true; }
if [ "$UNIT" = status ]; then
  send_units
  [ $stage_rc = 0 ] || exit 3
  exit 0
fi
if [ $env_rc != 0 ]; then
  echo "RESULT unit=$ID status=not-run: the env is not ready (STATUS above says what to carry)"
  send_units; exit 4
fi

# (d) the unit, under timeout
if [ "$(U get "$RUNS/$ID/unit.json" status none 2>/dev/null)" = done ] && [ -f "$RUNS/packs/$ID.tgz" ]; then
  cp "$RUNS/packs/$ID.tgz" "$OUT/"; send_units
  echo "RESULT unit=$ID status=done (in an earlier call on this machine; archive sent again: $ID.tgz)"
  exit 0
fi
now=$(date +%s)
ub=$(( T0 + ${CALL_LIMIT:-590} - ${PACK_RESERVE:-25} - now ))
[ "$BUDGET" -lt "$ub" ] && ub=$BUDGET
export UNIT_DEADLINE=$(( now + ub ))
echo "unit $ID: budget ${ub} s"
U record "$RUNS/units.json" "$ID" running "args=$UNIT $*" machine="$MACHINE"
mkdir -p "$RUNS/$ID"
timeout -k 15 "$ub" bash "$0" --body "$ID" "$UNIT" "$@" 2>&1 | tee -a "$RUNS/$ID/unit.log"
rc=${PIPESTATUS[0]}
case $rc in
  0) st=done ;;
  75) st=partial ;;
  124|137) st=timeout ;;
  *) st=failed ;;
esac
secs=$(( $(date +%s) - now ))
U note "$RUNS/$ID/unit.json" status=$st rc=$rc seconds=$secs machine="$MACHINE" gpu="${GPU_NAME:-none}" "unit=$UNIT $*"
mkdir -p "$RUNS/packs"
if packed=$(U pack "$ID" "$RUNS/$ID" "$RUNS/packs"); then
  cp "$RUNS/packs/$ID.tgz" "$OUT/"
  size=${packed##* }
  U record "$RUNS/units.json" "$ID" $st rc=$rc seconds=$secs archive="$ID.tgz" bytes=$size \
      sha256="$(sha256sum "$OUT/$ID.tgz" | cut -d' ' -f1)"
else
  U record "$RUNS/units.json" "$ID" pack-refused rc=$rc seconds=$secs
  st=pack-refused size=0
fi
send_units
status
echo "RESULT unit=$ID status=$st rc=$rc seconds=$secs archive=$ID.tgz ($(( (${size:-0} + 1023) / 1024 )) KiB)"
[ $st = done ] && exit 0
exit 5
