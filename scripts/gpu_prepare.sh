#!/usr/bin/env bash
# Everything the device calls of docs/gpu-plan.md carry, made here on a fresh machine in one go
# (session 12: about 5 minutes once the default index exists; `make prepare` first):
#
#   bash scripts/gpu_prepare.sh            # then the calls; `python scripts/gpu_park.py unpark` after
#
#   build/whl-stage/   peft and gguf wheels (the units' environment; pip download from the registry)
#   .whl/              pytest and its dependencies (only the kernels call carries it)
#   build/bundle/      the retrieval snapshot (python -m rearqa.eval.bundle, depth 20, 7 splits)
#   build/bundle13/    the same without squad-test (hard links): no unit of issues 13-15 reads it,
#                      and without it the core and the test parts fit two calls with the inputs
#   .gpu/in/           transmla-calib.json (the calibration ids) and train-baseline-ragft-s0.tgz:
#                      the shipped rag-ft adapter (checkpoints/rag-ft-smollm2, seed 0's chosen) with
#                      the unit record docs/results/protocol/train-baseline-ragft-s0/unit.json, the
#                      archive a unit reads for `ragft-s0` on a machine where that unit did not run
#   .gpu/p1..p3        the parts (python scripts/gpu_stage.py build), after parking the tree
#
# Then (session 12's sizes): call 1 carries .gpu/p1 + both inputs (63.1 MiB with the 2.6 MiB
# tree), call 2 .gpu/p2 (+ .gpu/p3, 62.1 MiB), so the second call can already train and evaluate.
set -euo pipefail
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { echo "no $PY: run make install prepare first"; exit 2; }

mkdir -p build/whl-stage .whl .gpu/in
pip_get() { "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
                --implementation cp --platform manylinux2014_x86_64 -d "$@"; }
ls build/whl-stage/peft-*.whl > /dev/null 2>&1 || pip_get build/whl-stage peft==0.21.2 gguf==0.19.0
ls .whl/pytest-*.whl > /dev/null 2>&1 || pip_get .whl pytest pluggy iniconfig packaging pytest-xdist execnet

if [ ! -f build/bundle/meta.json ]; then
  "$PY" -m rearqa.eval.bundle --out build/bundle --depth 20 --splits nq-dev-train tqa-dev-train \
      nq-dev-select tqa-dev-select nq-test tqa-test squad-test
fi
if [ ! -f build/bundle13/meta.json ]; then
  rm -rf build/bundle13 && mkdir -p build/bundle13
  for f in build/bundle/*.jsonl.gz; do [[ $f == *squad-test* ]] || ln -f "$f" build/bundle13/; done
  "$PY" -c 'import json, sys; m = json.load(open(sys.argv[1])); m["splits"].pop("squad-test", None)
json.dump(m, open(sys.argv[2], "w"), indent=1)' build/bundle/meta.json build/bundle13/meta.json
fi

[ -f .gpu/in/transmla-calib.json ] || "$PY" scripts/transmla_calib.py --out .gpu/in/transmla-calib.json
if [ ! -f .gpu/in/train-baseline-ragft-s0.tgz ]; then
  tmp=$(mktemp -d)
  mkdir "$tmp/train-baseline-ragft-s0"
  cp docs/results/protocol/train-baseline-ragft-s0/unit.json "$tmp/train-baseline-ragft-s0/"
  cp -r checkpoints/rag-ft-smollm2 "$tmp/train-baseline-ragft-s0/chosen"
  tar czf .gpu/in/train-baseline-ragft-s0.tgz -C "$tmp" train-baseline-ragft-s0
  rm -rf "$tmp"
fi

python3 scripts/gpu_park.py park
rm -rf .gpu/p[0-9]*
"$PY" scripts/gpu_stage.py build --bundle build/bundle13 --wheels build/whl-stage
du -sb .gpu/p* .gpu/in/* | awk '{printf "%-40s %6.2f MiB\n", $2, $1 / 1048576}'
