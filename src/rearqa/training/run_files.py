"""A training run's directory: what `rearqa.training.train` writes under `out`.

    train_config.json   the TrainConfig; a restart with other settings is refused
    plan.json           steps, stages, token budget and a digest of the training questions
    data_stats.json     what the data builder produced
    train_log.jsonl     one record per step: step, stage, loss, lm, rank, lr, grad_norm, tokens,
                        seconds, epoch
    norms.jsonl         with norm_monitor_every: one record per layer per measured step: step,
                        layer, q_max, k_max, x_max, L, sqrt_log_L (rearqa.training.norms)
    checkpoints/step-N/ model/ (loadable, as final/), trainable.safetensors, optimizer.safetensors
                        + optimizer.json, scheduler.json, rng.safetensors + rng.json,
                        trainer_state.json: safetensors and JSON only, never pickle
    final/              rear: RearModel.from_pretrained(out/final, base_model_dir)
                        baselines: a PEFT adapter + tokenizer, loaded with
                        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out/final)
    summary.json        written last: steps, tokens, seconds, tokens/s (the run is complete)

Every JSON file is written atomically (rearqa.files), so a run killed mid-write leaves the
previous version, never half a file; a checkpoint directory is renamed into place once complete
(rearqa.training.checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path

from rearqa.files import atomic_write_text

LOG_FILE, CONFIG_FILE, PLAN_FILE, STATS_FILE, SUMMARY_FILE, NORMS_FILE = (
    "train_log.jsonl", "train_config.json", "plan.json", "data_stats.json", "summary.json",
    "norms.jsonl")
CHECKPOINTS, FINAL = "checkpoints", "final"


def save_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def truncate_records(path: Path, step: int) -> None:
    """Drop the JSONL records of `path` after `step` (a resumed run is about to redo them)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))
