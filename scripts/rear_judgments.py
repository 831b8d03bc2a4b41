"""Judgments right on the 30 fixed dev-select pairs of tests/data/rear_judgments.jsonl (the
issue's integration check), for the shipped REAR checkpoint and the untrained wrapper.

    python scripts/rear_judgments.py [CHECKPOINT]      # default checkpoints/rear-smollm2
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rearqa import assets
from rearqa.eval.rear_routing import pair_judgments
from rearqa.reader.config import ReaderConfig, default_checkpoint_dir
from rearqa.reader.rear import RearModel
from rearqa.reader.rear.reader import RearReader


def main() -> None:
    rows = [json.loads(line) for line in Path("tests/data/rear_judgments.jsonl").read_text().splitlines()
            if line.strip()]
    base = assets.reader_model_dir()
    config = ReaderConfig(method="rear", batch_size=8, dtype="float32", max_new_tokens=1)
    checkpoint = Path(sys.argv[1]) if len(sys.argv) > 1 else default_checkpoint_dir()
    untrained = RearModel.from_base(AutoModelForCausalLM.from_pretrained(base),
                                    AutoTokenizer.from_pretrained(base))
    for name, model in ((str(checkpoint), checkpoint), ("untrained wrapper", untrained)):
        reader = RearReader(config, model, base, "cpu")
        right, scores = pair_judgments(reader, rows)
        above = sum(pos > neg for pos, neg in scores)
        print(f"{name}: threshold {reader.routing.threshold:.4g}, {right} of {2 * len(rows)} judgments "
              f"right, positive above negative in {above} of {len(rows)} pairs")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
