"""REAR batch throughput and chat time-to-first-token: the vLLM engine vs the transformers engine.

One run, one process, the same weights, dtype and thread count for both engines:

    throughput  REAR (`read_batch`: score k passages, generate under each judgment, confidences,
                route) on N questions of a retrieval snapshot split with their top-k dense
                passages; questions/s per engine and the vllm/hf ratio. One warm-up batch per
                engine first (vLLM compiles and caches on its first calls).
    TTFT        20 further questions through the chat path (`BaselineReader.stream`, RAG prompt
                with the same passages): seconds to the first non-empty text piece, p50. The REAR
                reader streams only after routing, so its first-token time is its whole-question
                latency; that is reported too (p50).

Weights: `--checkpoint` (default checkpoints/rear-smollm2) when it exists, else the untrained
RearModel wrapper of the bundled SmolLM2 with a fixed random <RANK_SCORE> row (throughput does
not depend on training; answers do). Either is merged to a plain checkpoint both engines load.

    python scripts/bench_vllm.py --n 200 --out docs/results/vllm_throughput.json

Writes JSON with per-question rows (answers of both engines, TTFT samples) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="questions for throughput")
    parser.add_argument("--ttft-questions", type=int, default=20, help="chat questions for TTFT")
    parser.add_argument("--k", type=int, default=3, help="passages per question")
    parser.add_argument("--snapshot", default="build/bundle",
                        help="retrieval snapshot directory (python -m rearqa.eval.bundle)")
    parser.add_argument("--split", default="nq-test")
    parser.add_argument("--checkpoint", default="", help="REAR checkpoint; '' = the default one")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of EACH engine")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="questions per REAR batch (both engines)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", default="docs/results/vllm_throughput.json")
    return parser.parse_args(argv)


def plain_checkpoint(args, base_dir: Path, tmp: Path) -> tuple[Path, str]:
    """A merged plain REAR checkpoint and a note saying which weights it holds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearqa.reader.config import default_checkpoint_dir
    from rearqa.reader.rear import RearConfig, RearModel

    trained = Path(args.checkpoint) if args.checkpoint else default_checkpoint_dir()
    if (trained / "rear_config.json").is_file():
        model = RearModel.from_pretrained(trained, base_dir, dtype=torch.float32)
        note = f"trained checkpoint {trained}"
    else:
        lm = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = RearModel.from_base(lm, AutoTokenizer.from_pretrained(base_dir),
                                    RearConfig(use_chat_template=True), base_model_dir=base_dir)
        with torch.no_grad():
            row = torch.randn(lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
            model.causal_lm.get_output_embeddings().weight[model.token_ids.rank_score] = 0.1 * row
        note = (f"untrained RearModel wrapper of {base_dir} (no {trained}); <RANK_SCORE> row = "
                "0.1 * randn(seed 0)")
    return model.merge_to_plain_checkpoint(tmp / "rear-plain"), note


def timed_read(reader, questions, passages) -> tuple[float, list]:
    start = time.perf_counter()
    answers = reader.read_batch(questions, passages)
    return time.perf_counter() - start, answers


def first_token_seconds(stream) -> float:
    start = time.perf_counter()
    for piece in stream:  # text pieces, then the Answer (counted as the first token if no text came)
        if not isinstance(piece, str) or piece.strip():
            elapsed = time.perf_counter() - start
            for _ in stream:  # drain, so the engine is idle for the next question
                pass
            return elapsed
    return float("nan")


def bench_engine(name, rear, baseline, data, ttft_data) -> dict:
    questions, passages = data
    timed_read(rear, questions[:2], passages[:2])  # warm-up, not timed
    seconds, answers = timed_read(rear, questions, passages)
    ttft = [first_token_seconds(baseline.stream(q, p, "rag")) for q, p in zip(*ttft_data)]
    rear_latency = [timed_read(rear, [q], [p])[0] for q, p in zip(*ttft_data)]
    return {"engine": name, "seconds": seconds, "questions_per_s": len(questions) / seconds,
            "passages_per_s": sum(map(len, passages)) / seconds,
            "ttft_p50_s": statistics.median(ttft), "rear_latency_p50_s": statistics.median(rear_latency),
            "answers": [a.text for a in answers], "ttft_s": ttft, "rear_latency_s": rear_latency}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from rearqa import assets
    from rearqa.eval.bundle import Snapshot
    from rearqa.reader import BaselineReader, ReaderConfig
    from rearqa.reader.engines.hf import HFEngine
    from rearqa.reader.engines.vllm_engine import VllmEngine
    from rearqa.reader.rear.reader import RearReader
    from rearqa.reader.rear.vllm_reader import VllmRearReader

    torch.set_num_threads(args.threads)
    snapshot = Snapshot(args.snapshot)
    rows = snapshot.split(args.split)[: args.n + args.ttft_questions]
    if len(rows) < args.n + args.ttft_questions:
        raise SystemExit(f"{args.split} has {len(rows)} questions, fewer than --n + --ttft-questions")
    passages = [snapshot.ranked(r, "dense", args.k) for r in rows]
    questions = [r["question"] for r in rows]
    data = (questions[: args.n], passages[: args.n])
    ttft_data = (questions[args.n:], passages[args.n:])
    base_dir = assets.reader_model_dir(assets.ensure_prepared(progress=False))
    config = dict(dtype=args.dtype, threads=args.threads, batch_size=args.batch_size,
                  max_new_tokens=args.max_new_tokens)

    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        plain, weights = plain_checkpoint(args, base_dir, Path(tmp))
        start = time.perf_counter()
        engine = VllmEngine(plain, dtype=args.dtype, threads=args.threads)
        vllm_start_s = time.perf_counter() - start
        try:
            rear = VllmRearReader(ReaderConfig(method="rear", engine="vllm", **config), plain,
                                  engine=engine)
            baseline = BaselineReader(ReaderConfig(method="rag", engine="vllm", **config), plain,
                                      engine=engine)
            vllm = bench_engine("vllm", rear, baseline, data, ttft_data)
        finally:
            engine.close()
        rear = RearReader(ReaderConfig(method="rear", **config), plain, device="cpu")
        baseline = BaselineReader(ReaderConfig(method="rag", **config), plain,
                                  engine=HFEngine(plain, args.dtype, args.threads))
        hf = bench_engine("hf", rear, baseline, data, ttft_data)

    same = [a == b for a, b in zip(vllm["answers"], hf["answers"])]
    hf_answers, vllm_answers = hf.pop("answers"), vllm.pop("answers")  # kept in rows below
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "note": "shared CPU: other work ran on the same cores during the run"},
        "settings": {**vars(args), "weights": weights, "vllm_start_s": vllm_start_s},
        "summary": {"vllm_over_hf_questions_per_s": vllm["questions_per_s"] / hf["questions_per_s"],
                    "answers_identical": sum(same) / len(same)},
        "engines": [hf, vllm],
        "rows": [{"id": r["id"], "question": r["question"], "hf": a, "vllm": b}
                 for r, a, b in zip(rows, hf_answers, vllm_answers)],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"REAR on {args.n} {args.split} questions x {args.k} passages, {args.dtype}, "
          f"{args.threads} thread(s) per engine, batch {args.batch_size}; weights: {weights}")
    print("| engine | questions/s | passages/s | chat TTFT p50 (s) | REAR latency p50 (s) |")
    print("|---|---|---|---|---|")
    for e in (hf, vllm):
        print(f"| {e['engine']} | {e['questions_per_s']:.3f} | {e['passages_per_s']:.2f} | "
              f"{e['ttft_p50_s']:.3f} | {e['rear_latency_p50_s']:.2f} |")
    print(f"vllm/hf questions/s: {result['summary']['vllm_over_hf_questions_per_s']:.2f}x; "
          f"identical answers: {sum(same)}/{len(same)}; vLLM start {vllm_start_s:.0f} s; "
          f"JSON: {args.out}")


if __name__ == "__main__":  # vLLM spawns processes
    main()
