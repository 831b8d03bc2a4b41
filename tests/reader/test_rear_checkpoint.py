"""Saving, loading and merging REAR models: safetensors + JSON, small LoRA saves, servable merge."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rearqa.reader.rear import RearConfig, RearModel, RoutingConfig, add_lora
from rearqa.testing import tiny_llama, tiny_tokenizer

QUESTION = "who wrote hamlet ?"
PASSAGES = ["hamlet is a tragedy written by shakespeare .", "paris is the capital of france"]


def perturb_trainables(model, seed=1):
    """Stand-in for training: move every trainable tensor (LoRA B is zero at init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not name.startswith("rank_head"):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
        # Training keeps <RANK_REF> at zero through its gradient; this shortcut has to do it.
        model.causal_lm.get_output_embeddings().weight.data[model.token_ids.rank_ref] = 0.0
    model.eval()


def make(tmp_path, tied=True, head="linear", lora=False):
    """A model on a base saved to disk (LoRA checkpoints point back at their base)."""
    tok = tiny_tokenizer()
    base_dir = tmp_path / "base"
    tiny_llama(len(tok), tied).save_pretrained(base_dir)
    config = RearConfig(head=head, routing=RoutingConfig(threshold=1.25, gamma=3.0))
    model = RearModel.from_base(AutoModelForCausalLM.from_pretrained(base_dir), tok, config,
                                base_model_dir=base_dir)
    if lora:
        add_lora(model, r=4, alpha=8, dropout=0.0)
    else:
        model.causal_lm.get_output_embeddings().weight.data[model.token_ids.rank_score].normal_()
    perturb_trainables(model)
    return model


def outputs(model):
    with torch.inference_mode():
        scores = model.score_texts(QUESTION, PASSAGES)
        ids = torch.tensor([[2, 22, 10, model.token_ids.begin_query, 12, 17, 22,
                             model.token_ids.generate_score, model.token_ids.relevant, 23]])
        lm = model(ids, torch.ones_like(ids)).lm_logits
    return scores, lm


@pytest.mark.parametrize("tied", [True, False])
def test_plain_round_trip_is_exact_and_loads_in_transformers(tmp_path, tied):
    model = make(tmp_path, tied)
    path = model.save_pretrained(tmp_path / "rear")
    meta = json.loads((path / "rear_config.json").read_text())
    assert meta["kind"] == "plain" and meta["config"]["routing"]["threshold"] == 1.25
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))  # no pickle
    loaded = RearModel.from_pretrained(path)
    assert loaded.config == model.config and loaded.token_ids == model.token_ids
    for a, b in zip(outputs(model), outputs(loaded)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert AutoModelForCausalLM.from_pretrained(path).config.vocab_size == len(model.tokenizer)


@pytest.mark.parametrize("tied", [True, False])
def test_lora_save_holds_adapter_and_new_rows_only(tmp_path, tied):
    model = make(tmp_path, tied, lora=True)
    path = model.save_pretrained(tmp_path / "rear")
    tensors = load_file(path / "adapter" / "adapter_model.safetensors")
    rows = {k: v.shape for k, v in tensors.items() if "lora_" not in k}
    expected = [(5, 16)] if tied else [(3, 16), (4, 16)]
    assert sorted(rows.values()) == expected, rows  # never the whole (V, D) embedding
    assert sum(v.numel() for k, v in tensors.items() if "lora_" in k) == 2048
    assert not (path / "model.safetensors").exists()
    loaded = RearModel.from_pretrained(path)
    assert loaded.is_lora
    for a, b in zip(outputs(model), outputs(loaded)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_merged_checkpoint_serves_the_rank_logit_through_two_rows(tmp_path, tied):
    model = make(tmp_path, tied, lora=True)
    out_dir = model.merge_to_plain_checkpoint(tmp_path / "merged")
    assert model.is_lora  # merging worked on a copy
    plain = AutoModelForCausalLM.from_pretrained(out_dir).eval()  # what vLLM will load
    ids = model.token_ids
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert not plain.get_output_embeddings().weight[ids.rank_ref].any()
    assert set(model.suppressed_token_ids()) <= set(plain.generation_config.suppress_tokens)
    prompt = [t for t in model.tokenizer(PASSAGES[0], add_special_tokens=False)["input_ids"]]
    prompt = [2] + prompt + [ids.begin_query, 12, 17, 22, 47, ids.generate_score]
    with torch.inference_mode():
        logits = plain(torch.tensor([prompt])).logits[0, -1]
        served = logits[ids.rank_score] - logits[ids.rank_ref]
        expected = model.score(torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long))
    torch.testing.assert_close(served, expected[0], atol=1e-5, rtol=1e-5)
    reloaded = RearModel.from_pretrained(out_dir)
    assert not reloaded.is_lora
    for a, b in zip(outputs(model), outputs(reloaded)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lowrank_head_round_trips_beside_lora(tmp_path):
    model = make(tmp_path, head="lowrank_attn", lora=True)
    with torch.no_grad():
        for p in model.rank_head.parameters():
            p.add_(0.1)
    path = model.save_pretrained(tmp_path / "rear")
    assert (path / "rank_head.safetensors").is_file()
    loaded = RearModel.from_pretrained(path)
    torch.testing.assert_close(outputs(model)[0], outputs(loaded)[0], atol=0, rtol=0)
    merged = RearModel.from_pretrained(model.merge_to_plain_checkpoint(tmp_path / "merged"))
    torch.testing.assert_close(outputs(model)[0], outputs(merged)[0], atol=1e-5, rtol=1e-5)


def test_load_errors_say_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="rear_config.json"):
        RearModel.from_pretrained(tmp_path)
    model = make(tmp_path, lora=True)
    path = model.save_pretrained(tmp_path / "rear")
    with pytest.raises(FileNotFoundError, match="base_model_dir="):
        RearModel.from_pretrained(path, base_model_dir=tmp_path / "nowhere")


def test_compacted_lora_checkpoint_loads_in_bf16_precision(tmp_path):
    from rearqa.reader.rear.checkpoint import compact_checkpoint

    model = make(tmp_path, tied=False, lora=True)
    path = model.save_pretrained(tmp_path / "rear")
    before = (path / "adapter" / "adapter_model.safetensors").stat().st_size
    after = compact_checkpoint(path)
    assert after < before  # (tiny model: the header is a large share of the file)
    assert {t.dtype for t in load_file(path / "adapter" / "adapter_model.safetensors").values()} == {torch.bfloat16}
    loaded = RearModel.from_pretrained(path)
    loaded.check_ref_row_zero()  # the zero <RANK_REF> row survives the cast exactly
    for a, b in zip(outputs(model), outputs(loaded)):  # bf16 rounding of the adapter only
        finite = torch.isfinite(a)  # masked control-token logits are -inf in both
        assert torch.equal(finite, torch.isfinite(b))
        # 3% measured: the 0.3-std perturbations of this tiny model amplify the rounding
        assert float((a[finite] - b[finite]).norm() / a[finite].norm()) < 0.05
    with pytest.raises(ValueError, match="not a LoRA checkpoint"):
        compact_checkpoint(make(tmp_path / "plain").save_pretrained(tmp_path / "plain-rear"))


def test_relevance_platt_is_two_finite_numbers_or_none():
    from rearqa.config_errors import ConfigError
    from rearqa.reader.rear import RearConfig

    assert RearConfig().relevance_platt is None
    assert RearConfig(relevance_platt=[2, -1.5]).relevance_platt == [2.0, -1.5]
    for bad in ([1.0], [1.0, float("nan")], "1,2", [True, 0.0]):
        with pytest.raises(ConfigError, match="relevance_platt"):
            RearConfig(relevance_platt=bad)
