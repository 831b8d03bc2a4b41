"""SpAtten on the real rag-ft reader, CPU: EM beside the unpruned reader, attention FLOPs and KV
bytes ratios, and how often gold-answer tokens in answer-bearing passages are pruned, per budget.

    python scripts/spatten_sanity.py --split nq-dev-select --limit 30 --k 5 \
        --budgets spatten:tokens=0.6 "spatten:tokens=0.4,heads=0.8,key_bits=4,values=0.9" \
        --out docs/results/spatten/sanity-nq-dev-select.json

The reader is SmolLM2-135M-Instruct with the shipped rag-ft adapter merged (float32), reading the
snapshot's top-k dense passages through the `short` prompt one question at a time (no padding);
the unpruned run uses the model's own attention (sdpa). Each budget installs SpAtten on the same
weights. Rows keep every question's answer, EM, ratios and evidence counts. Choose settings on
dev-select splits only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.eval.bundle import Snapshot  # noqa: E402
from rearqa.eval.metrics import exact_match, passages_with_answer  # noqa: E402
from rearqa.reader.base import first_line  # noqa: E402
from rearqa.reader.prompts import build_messages, get_prompt, shown_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_budget(engine, budget: str, rows: list[dict], k_passages, snapshot, args) -> dict:
    from rearqa.reader.backbone import inference_backbone
    from rearqa.reader.backbone.spatten.attention import attention_flops_ratio, track
    from rearqa.reader.backbone.spatten.evidence import EvidenceRate, passage_spans, prompt_evidence_rate

    if budget != "none":
        method, cfg = inference_backbone(budget)
        method.apply(engine.model, cfg)
    template = get_prompt("short")
    out, stats_all, evidence = [], [], EvidenceRate()
    start = time.time()
    for row in rows:
        passages = snapshot.ranked(row, "dense", args.k)
        messages = build_messages(row["question"], passages, template, args.max_words)
        text = engine.render(messages)
        with track(engine.model) if budget != "none" else _null() as history:
            answer = first_line(engine.generate([messages], args.max_new_tokens)[0])
        item = {"id": row["id"], "answer": answer, "em": exact_match(answer, row["answers"])}
        if budget != "none":
            stats = history[0]
            stats_all.append(stats)
            enc = engine.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
            offsets = enc["offset_mapping"]
            bearing = passages_with_answer([p.text for p in passages], row["answers"])
            shown = [shown_text(p, args.max_words) for p in passages]
            spans = [s for s, b in zip(passage_spans(text, shown), bearing) if b]
            rate = prompt_evidence_rate(text, offsets, spans, row["answers"],
                                        stats.pruned_layer[0, :len(offsets)].tolist())
            evidence = evidence + rate
            item.update(stats.summary(), evidence=rate.as_dict(), prompt_tokens=len(offsets))
        out.append(item)
    summary = {"budget": budget, "questions": len(out), "em": sum(r["em"] for r in out) / len(out),
               "seconds": round(time.time() - start, 1)}
    if stats_all:
        summary.update(attention_flops_ratio(stats_all), evidence=evidence.as_dict())
    return {"summary": summary, "rows": out}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snapshot", type=Path, default=Path("/work/main/build/bundle"))
    p.add_argument("--split", default="nq-dev-select")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--max-words", type=int, default=150)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--budgets", nargs="+", required=True)
    p.add_argument("--adapter", type=Path, default=REPO / "checkpoints" / "rag-ft-smollm2")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if "test" in args.split:
        raise SystemExit(f"--split {args.split}: settings are chosen on dev-select splits, not test")
    import torch

    from rearqa.assets import reader_model_dir
    from rearqa.reader.finetuned import DeviceHFEngine

    torch.manual_seed(0)
    snapshot = Snapshot(args.snapshot)
    rows = snapshot.split(args.split)[:args.limit]
    engine = DeviceHFEngine(reader_model_dir(), "float32", device="cpu", adapter=args.adapter)
    results = [run_budget(engine, b, rows, args.k, snapshot, args) for b in ["none", *args.budgets]]
    base = {r["id"]: r["em"] for r in results[0]["rows"]}
    for result in results[1:]:
        s = result["summary"]
        s["em_delta_points"] = 100 * (s["em"] - results[0]["summary"]["em"])
        s["answers_changed"] = sum(r["answer"] != b["answer"]
                                   for r, b in zip(result["rows"], results[0]["rows"]))
        assert set(base) == {r["id"] for r in result["rows"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "results": results}, indent=1))
    for result in results:
        print(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
