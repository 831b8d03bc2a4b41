"""Training tests' shared world: a tiny snapshot whose words are all in the tiny tokenizer, a tiny
base checkpoint (module-scoped: each test module builds its own), and tiny TrainConfigs on it."""
import json

import pytest
import torch

from rearqa.eval.bundle import write_jsonl_gz
from rearqa.testing import tiny_llama, tiny_tokenizer
from rearqa.training.config import TrainConfig

PASSAGES = {"p1": ("hamlet", "hamlet is a tragedy written by shakespeare ."),
            "p2": ("paris", "paris is the capital of france ."),
            "p3": ("london", "london is a city in england ."),
            "p4": ("river", "the river in paris is in the city ."),
            "p5": ("music", "the band play music in london ."),
            "p6": ("year", "shakespeare was born in england .")}
QUESTIONS = [("who wrote hamlet ?", "shakespeare", "p1 p2 p6 p3", "p6 p1 p5 p4"),
             ("what is the capital of france ?", "paris", "p2 p4 p3 p1", "p3 p2 p5 p6"),
             ("where was shakespeare born ?", "england", "p6 p1 p3 p2", "p1 p3 p6 p5"),
             ("which city is the capital of england ?", "london", "p2 p3 p4 p5", "p3 p5 p2 p1")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A snapshot whose words are all in the tiny tokenizer, and a tiny base checkpoint."""
    root = tmp_path_factory.mktemp("train")
    snap = root / "snapshot"
    snap.mkdir()
    write_jsonl_gz(snap / "passages.jsonl.gz",
                   [{"id": k, "title": t, "text": x} for k, (t, x) in PASSAGES.items()])
    rows = [{"id": f"q{i}", "question": q, "answers": [a], "answer_type": "other",
             "answerable": True,
             "rankings": {"dense": [[p, 1 - j / 10] for j, p in enumerate(d.split())],
                          "bm25": [[p, 9 - j] for j, p in enumerate(b.split())]}}
            for i, (q, a, d, b) in enumerate(QUESTIONS)]
    write_jsonl_gz(snap / "nq-dev-train.jsonl.gz", rows)
    (snap / "meta.json").write_text(json.dumps({"splits": {"nq-dev-train": len(rows)}, "depth": 4}))
    tok = tiny_tokenizer()
    base = root / "base"
    tiny_llama(len(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    return root


@pytest.fixture(scope="module")
def train_config(world):
    """train_config(out, **overrides) -> a tiny TrainConfig on `world`, writing to world / out: a
    6-step REAR run (2 warm-up + 4 main steps) on CPU, LoRA r=4 with dropout, a checkpoint every 2
    steps, rag_k=2; `overrides` replace any of these settings."""
    def make(out, **overrides):
        base = dict(base_model=str(world / "base"), snapshot=str(world / "snapshot"),
                    splits=["nq-dev-train"], out=str(world / out), depth=4, group_size=4, batch=2,
                    grad_accum=1, warmup_stage_steps=2, steps=4, lora_r=4, lora_alpha=8,
                    lora_dropout=0.05, lr=1e-2, save_every=2, max_answer_tokens=5, rag_k=2,
                    max_passage_words=20, threads=1, device="cpu")
        return TrainConfig(**{**base, **overrides})
    return make


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one torch thread beats two on a shared machine; the setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def config_yaml(tmp_path):
    """config_yaml(settings, drop=()) -> a YAML file of the TrainConfig dict `settings` without the
    keys in `drop` (what the CLI tests pass with -c)."""
    def write(settings: dict, drop=(), name: str = "train.yaml"):
        path = tmp_path / name
        path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in settings.items() if k not in drop))
        return path
    return write
