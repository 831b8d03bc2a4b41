"""KL(teacher || student) of converted readers, before and after healing, on fixed corpus windows
or on the rag-ft prompts of held-out dev-select questions.

    python scripts/distill_kl.py --teacher base --snapshot build/bundle \
        --student /tmp/stu96 --student /tmp/stu96@/tmp/distill-rh/final --json /tmp/kl.json
    python scripts/distill_kl.py --teacher ADAPTER --rows prompts --windows 128 \
        --splits nq-dev-select tqa-dev-select --student DIR ...   # the heal's dev-select KL

`--rows prompts`: the first `--windows` questions of each split as rag-ft chat prompts (question,
top-3 passages, gold answer; rearqa.training.data.distill_rows.prompt_rows), every position.

A `--student` is a reader dir, or DIR@ADAPTER (the student dir with a distill run's LoRA adapter
merged in). The windows are train-split passage text (rearqa.training.data.distill_rows) in the
order of `--seed` (the runs use seed 0's; another seed reorders the same passages, so the windows
are not held out, only not the first ones a short run trained on). Prints a table, writes JSON
with the per-window values.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def load_student(spec: str, device: torch.device) -> torch.nn.Module:
    from rearqa.reader.backbone.loading import load_causal_lm

    student, _, adapter = spec.partition("@")
    lm = load_causal_lm(student, torch.float32)
    if adapter:
        from rearqa.reader.finetuned import merge_lora

        lm = merge_lora(lm, adapter)
    return lm.eval().to(device)


def held_out_prompts(snapshot, tokenizer, cfg, splits: list[str], per_split: int):
    """The rag-ft chat prompts (dense top-`rag_k` passages, as BaselineReader builds them) of the
    first `per_split` questions of each split, with the first gold answer as the assistant turn.
    Built here, not by the training data code, which refuses held-out splits."""
    from rearqa.reader.prompts import build_messages, get_prompt
    from rearqa.training.data.chat_examples import ChatExample, encode_chat_example
    from rearqa.training.data.token_rows import TokenRows

    template = get_prompt(cfg.prompt)
    rows, ids = [], []
    for split in splits:
        for row in snapshot.split(split)[:per_split]:
            passages = snapshot.ranked(row, "dense", cfg.rag_k)
            messages = build_messages(row["question"], passages, template, cfg.max_passage_words)
            example = ChatExample(row["id"], messages, row["answers"][0])
            rows.append(encode_chat_example(tokenizer, example, cfg.max_answer_tokens)[0]
                        [:cfg.distill_max_len])
            ids.append(f"{split}:{row['id']}")
    return TokenRows.from_lists(rows, [[True] * len(r) for r in rows]), ids


def window_kls(student, teacher, rows, temperature: float) -> list[float]:
    from rearqa.training.losses import chunked_kl_sum

    out = []
    with torch.no_grad():
        for i in range(len(rows)):
            ids = rows.ids[rows.row(i)].long()[None].to(student.device)  # (1, T)
            s = student.get_decoder()(input_ids=ids).last_hidden_state[0, :-1]  # (T-1, D)
            t = teacher.get_decoder()(input_ids=ids).last_hidden_state[0, :-1]
            total = chunked_kl_sum(s, t, student.get_output_embeddings(),
                                   teacher.get_output_embeddings(), temperature, 512)
            out.append(total.item() / s.shape[0])
    return out


def main() -> None:
    from transformers import AutoTokenizer

    from rearqa.eval.bundle import Snapshot
    from rearqa.training.config import TrainConfig
    from rearqa.training.data.distill_rows import corpus_windows
    from rearqa.training.distill_task import load_teacher

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", action="append", required=True, help="DIR or DIR@ADAPTER")
    p.add_argument("--teacher", default="base")
    p.add_argument("--snapshot", default="build/bundle")
    p.add_argument("--splits", nargs="+", default=["nq-dev-train", "tqa-dev-train"])
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--rows", choices=["corpus", "prompts"], default="corpus")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = TrainConfig(method="distill", student=args.student[0].partition("@")[0],
                      teacher=args.teacher, snapshot=args.snapshot,
                      **({"splits": args.splits} if args.rows == "corpus" else {}))
    device = torch.device(args.device)
    teacher, record = load_teacher(cfg, torch.device("cpu"))
    teacher = teacher.float().to(device)
    tokenizer = AutoTokenizer.from_pretrained(cfg.student)
    if args.rows == "prompts":
        rows, ids = held_out_prompts(Snapshot(args.snapshot), tokenizer, cfg, args.splits,
                                     args.windows)
    else:
        rows, ids = corpus_windows(Snapshot(args.snapshot), tokenizer, args.splits, cfg.depth,
                                   args.max_len, args.windows, args.seed)
    report = {"teacher": record, "rows": args.rows, "splits": args.splits, "windows": ids,
              "max_len": args.max_len, "students": {}}
    print(f"{'student':60s} {'mean KL':>9s} {'s':>6s}")
    for spec in args.student:
        started = time.perf_counter()
        values = window_kls(load_student(spec, device), teacher, rows, args.temperature)
        mean = sum(values) / len(values)
        report["students"][spec] = {"mean_kl": mean, "per_window": values}
        print(f"{spec:60s} {mean:9.4f} {time.perf_counter() - started:6.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
