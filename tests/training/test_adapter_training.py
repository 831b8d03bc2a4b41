"""`adapter:` chooses the LoRA-family method a run trains (rearqa.reader.adapters): a hydra
rag-ft run, a MASA rag-ft run, a GDV-LoRA REAR run and a Block-LoRA rag-ft run on the tiny world
train, save, and load back merged."""
from pathlib import Path

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.training.train import train


# 1 warm-up + 2 main steps without dropout, no checkpoint before the final one.
SHORT = dict(warmup_stage_steps=1, steps=2, lora_dropout=0.0, save_every=100)


def test_a_hydra_run_trains_saves_and_its_merged_model_loads(train_config):
    from transformers import AutoModelForCausalLM

    from rearqa.reader.adapters import load_adapter
    from rearqa.reader.finetuned import merge_lora

    cfg = train_config("hydra-ft", **SHORT, method="rag-ft", adapter="hydra",
                       adapter_options={"sequential_r": 2, "sequential_alpha": 4})
    final = train(cfg, echo=lambda *_: None)
    assert '"rearqa_method": "hydra"' in (Path(final) / "adapter_config.json").read_text()
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model)
    model = load_adapter(base, final).eval()
    seq_b = [p for n, p in model.named_parameters() if "lora_seq_B" in n]
    assert seq_b and any(p.abs().sum() > 0 for p in seq_b)  # the sequential branch trained
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(ids).logits
        merged = merge_lora(AutoModelForCausalLM.from_pretrained(cfg.base_model), final)
        torch.testing.assert_close(merged(ids).logits, expected, rtol=0, atol=1e-5)


def test_a_masa_run_trains_its_shared_atoms_saves_them_once_and_merges_back(train_config):
    """MASA's atoms are shared across layers: the optimizer sees each dictionary once, the run
    moves it off zero, the checkpoint holds it once per projection type, and the reload merges
    back to the adapter model's logits."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rearqa.reader.adapters import load_adapter
    from rearqa.reader.finetuned import merge_lora

    cfg = train_config("masa-ft", **SHORT, method="rag-ft", adapter="masa",
                       adapter_options={"atoms": 2})
    final = train(cfg, echo=lambda *_: None)
    saved = load_file(Path(final) / "adapter_model.safetensors")
    atoms = {k: v for k, v in saved.items() if "lora_masa_atoms" in k}
    assert len(atoms) == 4 and all(v.abs().sum() > 0 for v in atoms.values())  # q, k, v, o: trained
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model)
    model = load_adapter(base, final).eval()
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(ids).logits
        merged = merge_lora(AutoModelForCausalLM.from_pretrained(cfg.base_model), final)
        torch.testing.assert_close(merged(ids).logits, expected, rtol=0, atol=1e-5)


def test_a_gated_dvlora_rear_run_trains_and_its_checkpoint_loads(train_config):
    from rearqa.reader.rear import RearModel

    cfg = train_config("gdv-rear", **SHORT, adapter="dvlora", adapter_options={"gate": "scalar"})
    final = train(cfg, echo=lambda *_: None)
    model = RearModel.from_pretrained(final, cfg.base_model)
    assert any("lora_gate" in n for n, _ in model.named_parameters())
    scores = model.score_texts("who wrote hamlet ?", ["hamlet is a tragedy", "paris is a city"])
    assert torch.isfinite(scores).all()


def test_a_blocklora_run_trains_saves_and_its_merged_model_loads(train_config):
    from transformers import AutoModelForCausalLM

    from rearqa.reader.adapters import load_adapter
    from rearqa.reader.finetuned import merge_lora

    cfg = train_config("block-ft", **SHORT, method="rag-ft", adapter="blocklora",
                       adapter_options={"blocks": 2})
    final = train(cfg, echo=lambda *_: None)
    assert '"rearqa_method": "blocklora"' in (Path(final) / "adapter_config.json").read_text()
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model)
    model = load_adapter(base, final).eval()
    shared_a = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert shared_a and all(p.shape[0] == 4 // 2 for p in shared_a)  # one A_s of r / blocks rows
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # B trained
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(ids).logits
        merged = merge_lora(AutoModelForCausalLM.from_pretrained(cfg.base_model), final)
        torch.testing.assert_close(merged(ids).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(adapter="ia3"), "unknown adapter method 'ia3'"),
    (dict(adapter="hydra", adapter_options={"gate": "scalar"}), r"\['gate'\] are not hydra settings"),
    (dict(adapter="dvlora", adapter_options={"gate": "always"}), "gate='always'"),
    (dict(adapter="blocklora", adapter_options={"blocks": 3}), "blocks=3 does not divide r=4"),
    (dict(adapter="masa", adapter_options={"atoms": 0}), "atoms=0"),
    (dict(adapter="hydra", method="loraprune", adapter_options={}), "loraprune"),
])
def test_a_bad_adapter_choice_is_refused_with_the_value(train_config, bad, match):
    kw = dict(bad)
    if kw.get("method") == "loraprune":
        kw.update(teacher="base", prune_kv_groups=1, prune_mlp_channels=8)
    with pytest.raises(ConfigError, match=match):
        train_config("bad", **SHORT, **kw)
