"""How the norms the LoRA computational-limits paper bounds (Hu et al., arXiv 2406.03136: max |X W_Q|
and max |X W_K| per layer, adapter included) grow with the sequence length L, against sqrt(ln L).

The training monitor (rearqa.training.norms) measures them at one probe length per run: REAR's rows
are one passage each, L = 181-224. This script reads the reader's standard RAG prompts instead,
whose length grows with the passages given: for each k, the first `--questions` questions of a
retrieval snapshot with their top-k passages (dense ranking), in the reader's prompt and chat
template, as the rows of one probe. Each probe goes through `rearqa.training.norms.measure` (no_grad,
eval mode, one row at a time without padding) for the base model, the base with the shipped rag-ft
adapter merged, and the shipped REAR checkpoint's LM (its LoRA unmerged, through PEFT).

Prints a table and writes JSON:

    python scripts/norms_by_length.py --snapshot build/bundle13 --split nq-dev-select \
        --out docs/results/norms/by-length-cpu.json

No numeric threshold is read off the result: the paper's threshold is asymptotic, with no
constants (docs/adapters.md "Norm monitoring").
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def probes(snapshot_dir: Path, split: str, questions: int, ks: list[int], tokenizer, prompt: str,
           max_words: int) -> dict[int, list[torch.Tensor]]:
    """k -> the token ids of the first `questions` questions' RAG prompts with their top-k passages."""
    from rearqa.eval.bundle import Snapshot
    from rearqa.reader.prompts import build_messages, get_prompt

    snapshot = Snapshot(snapshot_dir)
    rows = snapshot.split(split)[:questions]
    if len(rows) < questions:
        raise SystemExit(f"{snapshot_dir} {split}: {len(rows)} questions, fewer than --questions {questions}")
    depth = snapshot.meta["depth"]
    if max(ks) > depth:
        raise SystemExit(f"--k {max(ks)}: the snapshot ranks {depth} passages a question")
    template = get_prompt(prompt)
    out = {}
    for k in ks:
        out[k] = []
        for row in rows:
            messages = build_messages(row["question"], snapshot.ranked(row, "dense", k), template, max_words)
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=False)
            out[k].append(torch.tensor(ids, dtype=torch.long))
    return out


def models(base_dir: Path, dtype: torch.dtype):
    """(name, model) for the base, the base with the shipped rag-ft adapter merged, and the
    shipped REAR checkpoint's LM; each built when asked for, so one is in memory at a time."""
    from rearqa.reader.backbone.loading import load_causal_lm
    from rearqa.reader.config import default_adapter_dir
    from rearqa.reader.finetuned import merge_lora
    from rearqa.reader.rear.model import RearModel

    yield "base", load_causal_lm(base_dir, dtype)
    yield "rag-ft", merge_lora(load_causal_lm(base_dir, dtype), default_adapter_dir("rag-ft"))
    rear = RearModel.from_pretrained(default_adapter_dir("rear"), base_model_dir=base_dir, dtype=dtype)
    yield "rear", rear.lm


@torch.no_grad()
def position_maxima(model, probe: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per row, layer and position: max |X W_Q| and max |X W_K| over the channels, read off the
    outermost q_proj and k_proj modules as `rearqa.training.norms.measure` reads them.
    {"q": [rows of (layers, L_row)], "k": [...]}, so the maximum's position can be told."""
    from rearqa.training.norms import attention_projections, causal_decoder

    decoder = causal_decoder(model)
    layers = attention_projections(decoder)
    found: dict[str, list[torch.Tensor]] = {"q_proj": [], "k_proj": []}

    def hook(kind: str):
        def record(module, args, output):
            found[kind].append(output.detach().abs().amax(dim=-1)[0].float())  # (L_row,)
        return record

    handles = [module.register_forward_hook(hook(kind))
               for projections in layers.values() for kind, module in projections.items()]
    model.eval()
    out: dict[str, list[torch.Tensor]] = {"q": [], "k": []}
    try:
        for ids in probe:
            found["q_proj"].clear(), found["k_proj"].clear()
            decoder(input_ids=ids[None], use_cache=False)
            out["q"].append(torch.stack(found["q_proj"]))  # (layers, L_row), layers in order
            out["k"].append(torch.stack(found["k_proj"]))
    finally:
        for handle in handles:
            handle.remove()
    return out


def where(maxima: dict[str, list[torch.Tensor]], skip: int) -> dict:
    """Where each probe's largest q and k entries sit, and the largest past the first `skip`
    positions of each row (the chat template's header and its attention-sink tokens)."""
    out = {}
    for kind, rows in maxima.items():
        value, row, layer, position = max((float(r.max()), i, *divmod(int(r.argmax()), r.shape[1]))
                                          for i, r in enumerate(rows))
        later = max(float(r[:, skip:].max()) for r in rows if r.shape[1] > skip) if any(
            r.shape[1] > skip for r in rows) else None
        out[kind] = {"max": round(value, 4), "row": row, "layer": layer, "position": position,
                     f"max_past_{skip}": None if later is None else round(later, 4)}
    return out


def summarise(rows: list[dict]) -> dict:
    """One probe's layers in a few numbers: the largest q_max and k_max (and their layers), the
    median over layers, and the largest over sqrt(ln L)."""
    line = rows[0]["sqrt_log_L"]
    q = sorted(r["q_max"] for r in rows)
    kk = sorted(r["k_max"] for r in rows)
    top_q = max(rows, key=lambda r: r["q_max"])
    top_k = max(rows, key=lambda r: r["k_max"])
    return {"L": rows[0]["L"], "sqrt_log_L": line,
            "q_max": top_q["q_max"], "q_layer": top_q["layer"], "k_max": top_k["k_max"],
            "k_layer": top_k["layer"], "q_median": q[len(q) // 2], "k_median": kk[len(kk) // 2],
            "max_over_line": round(max(top_q["q_max"], top_k["k_max"]) / line, 3)}


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoTokenizer

    from rearqa.asset_paths import reader_model_dir
    from rearqa.reader.config import ReaderConfig
    from rearqa.training.norms import measure

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", type=Path, default=ROOT / "build" / "bundle13",
                    help="a retrieval snapshot (python -m rearqa.eval.bundle; scripts/gpu_prepare.sh builds this one)")
    ap.add_argument("--split", default="nq-dev-select")
    ap.add_argument("--questions", type=int, default=8, help="rows of each probe (the monitor's default is 8)")
    ap.add_argument("--k", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20],
                    help="passages in the prompt (0: the closed-book prompt)")
    ap.add_argument("--skip", type=int, default=16,
                    help="also report the largest entry past each row's first SKIP positions")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.questions < 1 or min(args.k) < 0:
        raise SystemExit("--questions must be at least 1 and --k at least 0")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    base_dir = reader_model_dir()
    reader = ReaderConfig()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    rows_by_k = probes(args.snapshot, args.split, args.questions, sorted(set(args.k)), tokenizer,
                       reader.prompt, reader.max_passage_words)
    results: dict[str, dict] = {}
    started = time.time()
    for name, model in models(base_dir, dtype):
        results[name] = {}
        for k, probe in rows_by_k.items():
            layers = measure(model, probe, torch.device("cpu"))
            located = where(position_maxima(model, probe), args.skip)
            for kind in ("q", "k"):  # the two readings of one forward agree
                if not math.isclose(located[kind]["max"], max(r[f"{kind}_max"] for r in layers), rel_tol=1e-4):
                    raise AssertionError(f"{name} k={k}: position maxima disagree with measure() on {kind}")
            results[name][k] = {**summarise(layers), "where": located, "layers": layers}
        del model
    print(f"probe: {args.questions} questions of {args.split}, prompt {reader.prompt!r}, "
          f"{reader.max_passage_words} words a passage, {args.dtype}\n")
    print(f"| model | k | L | sqrt(ln L) | q_max (layer, position) | k_max (layer, position) "
          f"| past position {args.skip}: q / k | median q / k over layers | largest / sqrt(ln L) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for name, by_k in results.items():
        for k, s in by_k.items():
            w = s["where"]
            past = " / ".join(f"{w[x][f'max_past_{args.skip}']:.2f}" for x in ("q", "k"))
            print(f"| {name} | {k} | {s['L']} | {s['sqrt_log_L']:.2f} "
                  f"| {s['q_max']:.2f} ({s['q_layer']}, {w['q']['position']}) "
                  f"| {s['k_max']:.2f} ({s['k_layer']}, {w['k']['position']}) | {past} "
                  f"| {s['q_median']:.2f} / {s['k_median']:.2f} | {s['max_over_line']:.2f} |")
    report = {"snapshot": str(args.snapshot), "split": args.split, "questions": args.questions, "skip": args.skip,
              "prompt": reader.prompt, "max_passage_words": reader.max_passage_words, "dtype": args.dtype,
              "threads": args.threads, "seconds": round(time.time() - started, 1),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "ln_L_note": "L is each probe's longest row; sqrt_log_L = sqrt(ln L)",
              "results": {name: {str(k): v for k, v in by_k.items()} for name, by_k in results.items()}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
