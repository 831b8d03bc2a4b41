"""The training loop on a tiny Llama and a tiny snapshot (`world`, conftest.py): learning,
resuming, budgets, imports."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.training.config import ConfigMismatchError, TrainConfig
from rearqa.training.train import (DataOrder, build_task, lr_factor, make_optimizer, plan_budget,
                                   stages, train)


def log(out):
    return [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]


def trainable(out):
    from safetensors.torch import load_file

    last = sorted((Path(out) / "checkpoints").glob("step-*"))[-1]
    return load_file(last / "trainable.safetensors")


@pytest.fixture(scope="module")
def rear_run(train_config):
    """An uninterrupted 6-step REAR run (2 warm-up + 4 main steps)."""
    cfg = train_config("rear-full")
    with_threads = torch.get_num_threads()
    final = train(cfg, echo=lambda *_: None)
    torch.set_num_threads(with_threads)
    return cfg, final


def test_schedule_restarts_per_stage_and_data_order_is_seeded():
    cfg = TrainConfig(warmup_stage_steps=10, steps=100, warmup_ratio=0.1)
    plan = stages(cfg, cfg.total_steps)
    assert [(s["name"], s["start"], s["steps"]) for s in plan] == [("warmup", 0, 10), ("main", 10, 100)]
    f = [lr_factor(plan, 0.1, s) for s in range(110)]
    assert f[0] < f[1] == pytest.approx(1.0) and f[9] < 0.05  # stage 1: warm-up then cosine to ~0
    assert f[10] < f[20] == pytest.approx(1.0) and f[109] < 0.01  # stage 2 starts over
    order = DataOrder(5, seed=1)
    epochs = [sorted(order.take(5 * e, 5)) for e in range(3)]
    assert epochs == [list(range(5))] * 3 and order.take(3, 7) == DataOrder(5, 1).take(3, 7)
    # Budget 10 with 3 tokens per item, 2 items per micro-batch, 2 micro-batches: 12 tokens/step.
    assert plan_budget(DataOrder(4, 0), [3] * 4, 2, 2, 10) == 1
    assert plan_budget(DataOrder(4, 0), [3] * 4, 2, 2, 13) == 2


def test_new_token_rows_get_no_weight_decay(train_config):
    task = build_task(train_config("unused"), torch.device("cpu"))
    opt = make_optimizer(task, train_config("unused", weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in task.model.named_parameters()}
    assert decayed and all("lora_" in names[i] for i in decayed)
    rows = [p for n, p in task.model.named_parameters() if "trainable_tokens" in n and p.requires_grad]
    assert rows and not any(id(p) in decayed for p in rows)


def test_rear_loss_decreases_on_a_repeated_batch(train_config):
    # One question, one group per step: every step sees the same batch.
    out = train_config("repeat", max_questions=1, batch=1, warmup_stage_steps=0, steps=12,
                       lora_dropout=0.0, save_every=100)
    train(out, echo=lambda *_: None)
    records = log(out.out)
    assert len(records) == 12 and {r["stage"] for r in records} == {"main"}
    assert records[-1]["lm"] < 0.7 * records[0]["lm"]
    assert records[-1]["rank"] < records[0]["rank"]


def test_resume_repeats_the_uninterrupted_run_and_writes_no_pickle(train_config, rear_run):
    cfg, final = rear_run
    assert final == Path(cfg.out) / "final"
    resumed = train_config("rear-resumed")
    first = train(resumed, stop_after_steps=3, echo=lambda *_: None)
    assert first.name == "step-0000003" and [r["step"] for r in log(resumed.out)] == [1, 2, 3]
    assert train(resumed, echo=lambda *_: None).name == "final"
    full, again = log(cfg.out), log(resumed.out)
    assert [r["step"] for r in again] == [1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in again] == ["warmup"] * 2 + ["main"] * 4
    assert [r["tokens"] for r in again] == [r["tokens"] for r in full]
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in full], rel=1e-5)
    a, b = trainable(cfg.out), trainable(resumed.out)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    for path in Path(resumed.out).rglob("*"):
        if path.is_file():
            assert path.suffix not in {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}, path
            head = path.read_bytes()[:2]
            assert head[:1] != b"\x80" and head != b"PK", f"{path} looks like a pickle / torch.save"
    # Done: a third call trains nothing; other settings in the same out dir are refused by name.
    assert train(resumed, echo=lambda *_: None).name == "final" and len(log(resumed.out)) == 6
    with pytest.raises(ConfigMismatchError, match="lr, seed"):
        train(train_config("rear-resumed", seed=1, lr=1e-3), echo=lambda *_: None)


def test_final_rear_checkpoint_loads_with_a_trained_rank_head(rear_run):
    from rearqa.reader.rear import RearModel

    cfg, final = rear_run
    model = RearModel.from_pretrained(final, cfg.base_model)
    scores = model.score_texts("who wrote hamlet ?", ["hamlet is a tragedy", "paris is a city"])
    assert torch.isfinite(scores).all() and scores.abs().sum() > 0  # the <RANK_SCORE> row moved


@pytest.mark.parametrize("method", ["rag-ft", "closed-book-ft"])
def test_baselines_stop_at_the_rear_token_budget(train_config, rear_run, method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rear_cfg, _ = rear_run
    rear_log = Path(rear_cfg.out) / "train_log.jsonl"
    budget = log(rear_cfg.out)[-1]["tokens"]
    cfg = train_config(method, method=method, token_budget_from=str(rear_log), save_every=100)
    final = train(cfg, echo=lambda *_: None)
    records = log(cfg.out)
    assert records[-1]["tokens"] >= budget > records[-2]["tokens"]
    assert json.loads((Path(cfg.out) / "plan.json").read_text())["token_budget"] == budget
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cfg.base_model), final)
    names = [n for n, _ in model.named_parameters() if "lora_B" in n]
    assert names and not any("lm_head" in n or "embed_tokens" in n for n in names)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_token_count_ahead_of_training_equals_the_runs_log(train_config, rear_run):
    """`train rear --count-tokens`: the baselines' budget, computed without training, is the
    count the finished run logged (and its step-2 record), so the baselines can train beside it."""
    from rearqa.training.train import rear_token_count

    cfg, _ = rear_run
    records = {r["step"]: r["tokens"] for r in log(cfg.out)}
    assert rear_token_count(cfg, [2, cfg.total_steps]) == {2: records[2],
                                                            cfg.total_steps: records[cfg.total_steps]}
    with pytest.raises(ConfigError, match="rear run"):
        rear_token_count(train_config("unused", method="rag-ft"))


def test_unfinished_rear_log_is_not_a_budget(train_config):
    cfg = train_config("rear-partial")
    train(cfg, stop_after_steps=1, echo=lambda *_: None)
    with pytest.raises(ConfigError, match="step 1 of 6"):
        train(train_config("cb-partial", method="closed-book-ft",
                           token_budget_from=str(Path(cfg.out) / "train_log.jsonl")))


def test_training_cli_imports_no_retriever_backend(train_config, tmp_path):
    yaml_file = tmp_path / "tiny.yaml"
    cfg = train_config("unused").to_dict()
    cfg.update(out=str(tmp_path / "cli"), warmup_stage_steps=1, steps=1)
    yaml_file.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.items() if k != "method"))
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['train_cmd', 'rear', '--config', {str(yaml_file)!r}, '--quiet']\n"
        "try:\n    runpy.run_module('rearqa.app.train_cmd', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = [m for m in ('faiss', 'bm25s', 'gradio', 'langchain_core', 'sentence_transformers',"
        " 'vllm', 'rearqa.pipeline', 'rearqa.retriever.dense', 'rearqa.retriever.bm25',"
        " 'rearqa.retriever.collection', 'rearqa.retriever.embedder') if m in sys.modules]\n"
        "assert not bad, bad\nprint('OK')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-2000:]
    assert (tmp_path / "cli" / "final" / "rear_config.json").is_file()
    assert math.isfinite(log(tmp_path / "cli")[-1]["loss"])


def test_own_linear_head_trains_resumes_and_ships_as_row_and_offset(train_config):
    """head_lr: the head is its own fp32 weight and bias at its own learning rate (no decay),
    centred, after a rank-only warm-up; resuming repeats the run, and the final checkpoint serves
    the trained head as its <RANK_SCORE> row plus rank_offset."""
    from rearqa.reader.rear import RearModel

    kw = dict(head_lr=5e-2, head_center=True, warmup_rank_only=True, weight_decay=0.1)
    task = build_task(train_config("unused", **kw), torch.device("cpu"))
    opt = make_optimizer(task, train_config("unused", **kw))
    head = [g for g in opt.param_groups if g["lr"] == 5e-2]
    assert len(head) == 1 and head[0]["weight_decay"] == 0.0 and len(head[0]["params"]) == 2
    assert task.model.linear_head.weight.dtype == torch.float32
    assert float(task.model.linear_head.center.abs().sum()) > 0  # centred on the base's states

    whole = train_config("own-head", **kw)
    final = train(whole, echo=lambda *_: None)
    parts = train_config("own-head-resumed", **kw)
    train(parts, stop_after_steps=3, echo=lambda *_: None)
    train(parts, echo=lambda *_: None)
    assert [r["loss"] for r in log(parts.out)] == pytest.approx([r["loss"] for r in log(whole.out)],
                                                                rel=1e-5)
    warmup = [r for r in log(whole.out) if r["stage"] == "warmup"]
    assert all(r["loss"] == pytest.approx(r["rank"]) for r in warmup)  # no LM loss in the warm-up
    weights = trainable(whole.out)
    assert float(weights["linear_head.weight"].abs().sum()) > 0  # it learned from zero
    model = RearModel.from_pretrained(final, whole.base_model)
    assert model.linear_head is None and model.config.rank_offset != 0.0
    scores = model.score_texts("who wrote hamlet ?", ["hamlet is a tragedy", "paris is a city"])
    assert torch.isfinite(scores).all()


def test_set_options_read_yaml_values_and_refuse_bad_ones():
    """`train ... --set KEY=VALUE`: any TrainConfig setting from the command line, the value read
    as YAML (1e-4 as the number it means); a malformed item or an unknown key is a clear error."""
    from rearqa.app.train_cmd import parse_sets
    from rearqa.config_errors import ConfigError
    from rearqa.training.config import TrainConfig

    sets = parse_sets(["lr=1e-4", "judgment_loss=none", "head_center=false", "steps=12",
                       "splits=[nq-dev-train]"])
    assert sets == {"lr": 1e-4, "judgment_loss": "none", "head_center": False, "steps": 12,
                    "splits": ["nq-dev-train"]}
    cfg = TrainConfig.from_yaml(None, method="rear", **sets)
    assert (cfg.lr, cfg.judgment_loss, cfg.head_center, cfg.steps) == (1e-4, "none", False, 12)
    for bad in ("lr", "=3", "lr=[1,"):
        with pytest.raises(ConfigError, match="--set"):
            parse_sets([bad])
    with pytest.raises(ConfigError, match="unknown setting"):
        TrainConfig.from_yaml(None, method="rear", **parse_sets(["learning_rate=1e-4"]))


def test_an_adapter_recipe_sits_between_the_config_file_and_the_set_options(tmp_path):
    from rearqa.app.train_cmd import run_settings
    from rearqa.training.config import TrainConfig

    run = tmp_path / "run.yaml"
    run.write_text("lora_r: 4\nlr: 1.0e-3\n")
    settings = run_settings(["lora_alpha=8"], "lora-attention", {"adapter": None, "seed": 3})
    cfg = TrainConfig.from_yaml(run, method="rag-ft", **settings)
    assert cfg.lora_target == ["q_proj", "k_proj", "v_proj", "o_proj"]  # the recipe's
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lr, cfg.seed) == (16, 8, 1e-3, 3)  # recipe, --set, file, option
    hydra = TrainConfig.from_yaml(run, method="rag-ft", **run_settings(None, "hydra", {}))
    assert hydra.adapter == "hydra" and hydra.adapter_settings().sequential_r == 8
