"""LoRAPrune on the project's loop (`rearqa train loraprune`, rearqa.training.loraprune_task) with a
tiny GQA Llama as the reader: the schedule reaches the targets, the saved LoRA is the trained one
sliced to the mask (merged into the pruned reader it computes what the masked LoRA model
computes), a run stopped mid-schedule resumes to the uninterrupted run's mask and losses, and bad
settings are refused with the valid values."""
import json
from pathlib import Path

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.loading import load_causal_lm
from rearqa.reader.backbone.loraprune.mask import PruneMask, install_mask
from rearqa.reader.backbone.loraprune.prune import prune_model
from rearqa.training.config import TrainConfig
from rearqa.training.train import train


@pytest.fixture(scope="module")
def reader(world):
    """A tiny GQA Llama (6 query heads, 2 KV heads of 4, MLP 20) with the tiny tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rearqa.testing import randomize_matrices

    out = world / "gqa"
    if not out.is_dir():
        tok = AutoTokenizer.from_pretrained(world / "base")
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=24, intermediate_size=20,
                             num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                             head_dim=4, max_position_embeddings=128, pad_token_id=1,
                             bos_token_id=2, eos_token_id=3)
        randomize_matrices(LlamaForCausalLM(config).eval(), std=0.2).save_pretrained(out)
        tok.save_pretrained(out)
    return out


def config(world, reader, out, **kw):
    base = dict(method="loraprune", base_model=str(reader), teacher=str(reader),
                snapshot=str(world / "snapshot"), splits=["nq-dev-train"], out=str(world / out),
                depth=4, batch=4, grad_accum=1, steps=8, lora_r=4, lora_alpha=8,
                lora_dropout=0.0, lr=5e-3, save_every=2, max_answer_tokens=5, rag_k=2,
                max_passage_words=20, distill_max_len=12, corpus_windows=6, kd_chunk=7,
                warmup_ratio=0.0, threads=1, device="cpu", prune_kv_groups=1,
                prune_mlp_channels=8, prune_start=0.25, prune_end=0.75, prune_every=2)
    return TrainConfig(**{**base, **kw})


def lora_model(reader, checkpoint: Path, cfg: TrainConfig):
    """The reader with the run's LoRA as the checkpoint saved it (unsliced, trainable.safetensors)."""
    from safetensors.torch import load_file

    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings

    model = wrap("lora", load_causal_lm(reader, torch.float32),
                 LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=0.0))
    saved = load_file(checkpoint / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    return model.eval()


def test_the_run_prunes_to_the_targets_and_ships_the_lora_over_the_pruned_reader(world, reader):
    from rearqa.reader.backbone.loraprune.config import PruneShape
    from rearqa.reader.finetuned import merge_lora

    cfg = config(world, reader, "lp")
    final = train(cfg, echo=lambda *_: None)
    mask = PruneMask.load(final / "mask.json")
    assert (mask.kv_groups, mask.mlp_channels) == (1, 8)
    record = json.loads((final / "loraprune.json").read_text())
    assert record["targets_reached"] and record["schedule"]["end"] == 6
    events = json.loads((final / "importance.json").read_text())["events"]
    assert [e["step"] for e in events] == [4, 6]  # (start 2, end 6], every 2 steps and at the end
    assert events[-1]["mlp_channels"] == 8 and events[-1]["kv_groups"] == 1

    masked_model = lora_model(reader, Path(cfg.out) / "checkpoints" / "step-0000008", cfg)
    install_mask(masked_model, mask, PruneShape.of(masked_model.config))
    pruned = merge_lora(prune_model(load_causal_lm(reader, torch.float32), mask), final)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads,
            pruned.config.intermediate_size) == (3, 1, 8)
    ids = torch.randint(6, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=ids).logits, masked_model(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)
    from rearqa.app.convert_cmd import convert_reader
    from rearqa.reader.backbone.manifest import read_manifest

    out = convert_reader("loraprune", str(reader), Path(cfg.out) / "pruned", {"mask": str(final / "mask.json")},
                         progress=False, dtype="float32")
    settings = read_manifest(out).settings  # the schedule that chose the mask, not the defaults
    assert (settings["prune_start"], settings["prune_end"], settings["prune_every"]) == (0.25, 0.75, 2)
    assert (settings["kv_groups"], settings["mlp_channels"]) == (1, 8)
    stats = json.loads((Path(cfg.out) / "data_stats.json").read_text())
    assert stats["prune"] == {"kv_groups": 1, "mlp_channels": 8} and stats["trainable"] == "lora"


def test_a_run_stopped_mid_schedule_resumes_to_the_same_mask(world, reader):
    whole = config(world, reader, "lp-whole")
    train(whole, echo=lambda *_: None)
    parted = config(world, reader, "lp-parted")
    train(parted, stop_after_steps=5, echo=lambda *_: None)  # after the first pruning step (4)
    state = json.loads((Path(parted.out) / "checkpoints" / "step-0000005" / "task_state.json").read_text())
    assert [e["step"] for e in state["events"]] == [4]
    train(parted, echo=lambda *_: None)
    for name in ("mask.json", "importance.json"):
        assert (Path(parted.out) / "final" / name).read_text() == (Path(whole.out) / "final" / name).read_text()
    logs = [[json.loads(line) for line in (Path(c.out) / "train_log.jsonl").read_text().splitlines()]
            for c in (whole, parted)]
    assert [r["step"] for r in logs[1]] == list(range(1, 9))
    for a, b in zip(*logs):
        assert a["lm"] == pytest.approx(b["lm"], rel=1e-4, abs=1e-6)


def test_bad_settings_are_refused(world, reader):
    with pytest.raises(ConfigError, match="trains a LoRA"):
        config(world, reader, "x", distill_trainable="attention")
    with pytest.raises(ConfigError, match="prune_kv_groups"):
        config(world, reader, "x", prune_kv_groups=0)
    with pytest.raises(ConfigError, match="leave student empty"):
        config(world, reader, "x", student=str(reader))
    with pytest.raises(ConfigError, match="prune_start"):
        config(world, reader, "x", prune_start=0.8)
    with pytest.raises(ConfigError, match=r"keep 1\.\.2"):
        train(config(world, reader, "x-heads", prune_kv_groups=3), echo=lambda *_: None)


def test_the_cli_runs_loraprune(world, reader, tmp_path, config_yaml):
    from typer.testing import CliRunner

    from rearqa.app.train_cmd import train_app

    yaml_file = config_yaml(config(world, reader, "unused").to_dict(), drop=(
        "method", "teacher", "prune_kv_groups", "prune_mlp_channels", "out", "steps"))
    out = tmp_path / "cli"
    done = CliRunner().invoke(train_app, [
        "loraprune", "--teacher", str(reader), "--kv-groups", "1", "--mlp-channels", "10",
        "-c", str(yaml_file), "--out", str(out), "--steps", "4", "--quiet"])
    assert done.exit_code == 0, done.output
    assert PruneMask.load(out / "final" / "mask.json").mlp_channels == 10


def test_the_shipped_config_parses():
    cfg = TrainConfig.from_yaml(Path(__file__).parents[2] / "configs" / "train" / "loraprune-gpu.yaml")
    assert cfg.method == "loraprune" and cfg.distill_trainable == "lora"
    assert (cfg.prune_kv_groups, cfg.prune_mlp_channels) == (2, 1024) and cfg.token_budget > 0
    assert all(split.endswith("-dev-train") for split in cfg.splits)
