"""Fuzz the HTTP API from its OpenAPI schema: many generated requests, valid and invalid.

    .venv/bin/python scripts/reliability/fuzz.py --examples 1200 --out runs/fuzz.json

Builds the app (with a bearer token) over a scratch collection of tests/data/mini_corpus.jsonl
in a temporary data home that shares the prepared models, then sends schemathesis-generated
requests through every operation (positive and negative generation) and runs its checks on each
response: no 5xx, documented status codes and content types, bodies matching the response
schemas, valid data accepted, invalid data refused, auth enforced. Prints a table of requests
per operation and status, writes it as JSON, and exits 1 on any failure (with the reproduction).
Not part of the test suite (the suite runs a small example count of the same thing).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fuzz-token-0123456789"
# Rules the schema cannot state: an upload's name must end in a supported suffix, and the last
# chat message must be a non-blank user question. Schema-valid requests breaking them get a
# 4xx on purpose, so "valid data is accepted" is not checked there (every other check is).
SEMANTIC_RULES = {("POST", "/documents"), ("POST", "/v1/chat/completions")}


def scratch_home(prepared: Path, into: Path) -> Path:
    for name in ("models", "data", "downloads", "manifest.json"):
        if (prepared / name).exists():
            (into / name).symlink_to(prepared / name)
    return into


def build_schema(home: Path, max_new_tokens: int):
    import schemathesis

    from rearqa.app.server import create_app
    from rearqa.config import PipelineConfig
    from rearqa.pipeline import Pipeline
    from rearqa.reader.config import ReaderConfig
    from rearqa.retriever.config import RetrieverConfig

    config = PipelineConfig(retriever=RetrieverConfig(collection="fuzz"),
                            reader=ReaderConfig(max_new_tokens=max_new_tokens), k=2)
    pipe = Pipeline(config, home=home)
    pipe.collection.add_paths([REPO / "tests" / "data" / "mini_corpus.jsonl"], progress=False)
    app = create_app(pipe, token=TOKEN, max_upload_bytes=64 * 1024, max_queue=64, warm=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})  # so negative cases may drop it
    return schema


def fuzz(schema, examples: int, seed: int) -> tuple[collections.Counter, list[str]]:
    from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings, strategies as st
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

    @hypothesis_seed(seed)
    @given(case=cases)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        label = f"{case.method} {case.path}"
        try:
            excluded = [positive_data_acceptance] if (case.method, case.path) in SEMANTIC_RULES else []
            response = case.call_and_validate(excluded_checks=excluded)
            counts[(label, response.status_code)] += 1
        except (Exception, BaseExceptionGroup) as exc:  # reported, and exit status 1, below
            counts[(label, "FAILED")] += 1
            failures.append(f"{label}: {exc}")

    run()
    return counts, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1200, help="generated requests (>= 1000 for a run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=8, help="reader answer length (speed)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "fuzz" / "fuzz.json")
    args = parser.parse_args()

    from rearqa import assets

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="rearqa-fuzz-") as tmp:
        schema = build_schema(scratch_home(assets.ensure_prepared(progress=False), Path(tmp)),
                              args.max_new_tokens)
        counts, failures = fuzz(schema, args.examples, args.seed)
    total = sum(counts.values())
    print(f"{'operation':<32} {'status':>7} {'requests':>9}")
    for (label, status), n in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"{label:<32} {status!s:>7} {n:>9}")
    print(f"{total} requests in {time.time() - started:.0f} s; {len(failures)} failure(s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"requests": total, "seed": args.seed, "failures": failures,
                                    "counts": [{"operation": label, "status": status, "requests": n}
                                               for (label, status), n in counts.items()]}, indent=2))
    for failure in failures[:20]:
        print(f"\nFAILURE {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
