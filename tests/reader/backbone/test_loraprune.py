"""LoRAPrune (reader/backbone/loraprune): GQA groups, importance from LoRA gradients, the mask,
the physical prune and its parity with the masked model, the transform's export."""
from __future__ import annotations

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import get_transform, read_manifest
from rearqa.reader.backbone.loading import load_causal_lm
from rearqa.reader.backbone.loraprune.config import LoRAPruneConfig, PruneShape
from rearqa.reader.backbone.loraprune.groups import lora_importance, weight_importance
from rearqa.reader.backbone.loraprune.mask import (ImportanceTracker, PruneMask, cubic_sparsity,
                                                   install_mask, kept_at, select_mask)
from rearqa.reader.backbone.loraprune.prune import prune_model
from rearqa.testing import randomize_matrices

VOCAB = 40


def gqa_llama(seed: int = 0):
    """A 2-layer Llama with 6 query heads on 2 KV heads (G = 3, as SmolLM2), head_dim 4, MLP 20."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=24, intermediate_size=20, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=4,
                         max_position_embeddings=64, tie_word_embeddings=True)
    return randomize_matrices(LlamaForCausalLM(config).eval())


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
MASK = PruneMask(2, 20, [[1], [0]], [[0, 3, 5, 7, 11], [1, 2, 3, 18, 19]])


def test_masked_model_equals_physically_pruned_model():
    model = gqa_llama()
    handles = install_mask(model, MASK, PruneShape.of(model.config))
    masked = logits(model, IDS)
    for handle in handles:
        handle.remove()
    pruned = prune_model(model, MASK)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads,
            pruned.config.intermediate_size, pruned.config.head_dim) == (3, 1, 5, 4)
    torch.testing.assert_close(logits(pruned, IDS), masked, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(model, IDS), masked)  # the mask did something


def test_install_mask_gates_each_projection_once_and_builds_the_gates_once(monkeypatch):
    """One hook per o_proj and down_proj (PEFT-wrapped too), and each layer's gates built once per
    call: rebuilding them for every module cost 15 s a pruning step on the real reader (session 14)."""
    from peft import LoraConfig, get_peft_model

    from rearqa.reader.backbone.loraprune import mask as mask_module

    calls = {"heads": 0, "channels": 0}

    def counted(key, build):
        def wrapper(*args):
            calls[key] += 1
            return build(*args)
        return wrapper

    for name, key in (("_head_gates", "heads"), ("_channel_gates", "channels")):
        monkeypatch.setattr(mask_module, name, counted(key, getattr(mask_module, name)))
    model = get_peft_model(gqa_llama(), LoraConfig(r=2, target_modules="all-linear"))
    handles = install_mask(model, MASK, PruneShape.of(model.config))
    assert len(handles) == 2 * 2 and calls == {"heads": 1, "channels": 1}
    gated = [name for name, module in model.named_modules() if module._forward_pre_hooks]
    assert sorted(n.split("layers.")[1] for n in gated) == ["0.mlp.down_proj", "0.self_attn.o_proj",
                                                           "1.mlp.down_proj", "1.self_attn.o_proj"]


def test_full_mask_leaves_logits_unchanged():
    model = gqa_llama()
    pruned = prune_model(model, PruneMask.full(PruneShape.of(model.config)))
    torch.testing.assert_close(logits(pruned, IDS), logits(model, IDS), atol=1e-6, rtol=1e-6)


def test_pruning_zero_weight_groups_leaves_logits_unchanged():
    model = gqa_llama()
    with torch.no_grad():
        for layer, keep_kv, keep_mlp in zip(model.model.layers, MASK.kv_keep, MASK.mlp_keep):
            gone_q = torch.ones(6 * 4, dtype=torch.bool)
            for g in keep_kv:
                gone_q[g * 12:(g + 1) * 12] = False
            layer.self_attn.o_proj.weight[:, gone_q] = 0  # the pruned heads write nothing
            gone = torch.ones(20, dtype=torch.bool)
            gone[keep_mlp] = False
            layer.mlp.down_proj.weight[:, gone] = 0
    torch.testing.assert_close(logits(prune_model(model, MASK), IDS), logits(model, IDS),
                               atol=1e-5, rtol=1e-5)


def lora_after_backward(model):
    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings

    peft = wrap("lora", model, LoraSettings(r=2, alpha=4, dropout=0.0))
    for name, param in peft.named_parameters():  # non-identity: B = 0 would hide B's terms
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    peft(IDS, labels=IDS).loss.backward()
    return peft


def test_weight_importance_is_the_reference_estimate():
    peft = lora_after_backward(gqa_llama())
    module = peft.base_model.model.model.layers[0].self_attn.q_proj
    a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
    grad = b.grad @ a + b @ a.grad - b.grad @ a.grad
    want = (grad * (module.base_layer.weight + module.scaling["default"] * b @ a)).abs()
    torch.testing.assert_close(weight_importance(module), want.detach())


def test_group_importance_sums_each_groups_weights():
    peft = lora_after_backward(gqa_llama())
    shape = PruneShape.of(peft.config)
    scores = lora_importance(peft, shape)
    assert scores.attn.shape == (2, 2) and scores.mlp.shape == (2, 20)
    torch.testing.assert_close(scores.attn.norm(dim=1), torch.ones(2))
    attn = peft.base_model.model.model.layers[1].self_attn
    raw = [weight_importance(getattr(attn, p)) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    group1 = (raw[0][12:].sum() + raw[1][4:].sum() + raw[2][4:].sum() + raw[3][:, 12:].sum())
    group0 = (raw[0][:12].sum() + raw[1][:4].sum() + raw[2][:4].sum() + raw[3][:, :12].sum())
    torch.testing.assert_close(scores.attn[1], torch.stack([group0, group1]) /
                               torch.stack([group0, group1]).norm())


def test_importance_needs_gradients():
    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings

    peft = wrap("lora", gqa_llama(), LoraSettings(r=2, alpha=4, dropout=0.0))
    with pytest.raises(ValueError, match="after backward"):
        lora_importance(peft, PruneShape.of(peft.config))


def test_tracker_schedule_and_selection():
    from rearqa.reader.backbone.loraprune.groups import GroupScores

    tracker = ImportanceTracker(0.9)
    tracker.update(GroupScores(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0, 2.0]])))
    ema = tracker.update(GroupScores(torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 1.0, 2.0]])))
    torch.testing.assert_close(ema.attn, torch.tensor([[0.9, 0.1]]))
    mask = select_mask(ema, 1, 2)
    assert mask.kv_keep == [[0]] and mask.mlp_keep == [[1, 2]]
    # a pruned channel stays pruned even when it becomes the most important
    later = select_mask(GroupScores(ema.attn, torch.tensor([[9.0, 1.0, 2.0]])), 1, 1, mask)
    assert later.mlp_keep == [[2]]
    assert [cubic_sparsity(s, 10, 20, 0.5) for s in (0, 10, 20, 30)] == [0, 0, 0.5, 0.5]
    assert 0 < cubic_sparsity(12, 10, 20, 0.5) < 0.5 * 0.5 < cubic_sparsity(15, 10, 20, 0.5)
    assert [kept_at(s, 9, 6) for s in (0.0, 0.25, 1.0)] == [9, 8, 6]


def test_bad_targets_and_masks_are_refused():
    config = gqa_llama().config
    with pytest.raises(ConfigError, match="keep 1..2"):
        LoRAPruneConfig(kv_groups=3).check_model(config)
    with pytest.raises(ConfigError, match="keep 1..20"):
        LoRAPruneConfig(mlp_channels=21).check_model(config)
    with pytest.raises(ConfigError, match="positive count"):
        LoRAPruneConfig(kv_groups=-1)
    with pytest.raises(ConfigError, match="training run needs"):
        LoRAPruneConfig(kv_groups=1).check_targets(config)
    with pytest.raises(ConfigError, match="same number in every layer"):
        PruneMask(2, 20, [[0], [0, 1]], [[0], [1]])
    with pytest.raises(ConfigError, match="at least one"):
        PruneMask(2, 20, [[], []], [[0], [1]])
    with pytest.raises(ConfigError, match="0..1"):
        PruneMask(2, 20, [[2], [0]], [[0], [1]])
    with pytest.raises(ConfigError, match="model has"):
        MASK.check_model(PruneShape(3, 6, 2, 4, 20))


def test_transform_exports_a_stock_llama_that_loads_by_path(tmp_path):
    model = gqa_llama()
    mask_path = MASK.save(tmp_path / "mask.json")
    assert PruneMask.load(mask_path) == MASK
    transform = get_transform("loraprune")
    cfg = transform.config_cls(mask=str(mask_path))
    pruned = transform.apply(model, None, cfg)
    assert (cfg.kv_groups, cfg.mlp_channels) == (1, 5)
    transform.export(pruned, tmp_path / "out", cfg)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.export_format == "llama_pruned" and manifest.vllm_servable
    assert manifest.kv_bytes_per_token == 2 * 2 * 1 * 4 * 4
    assert PruneMask.load(tmp_path / "out" / "loraprune_mask.json") == MASK
    loaded = load_causal_lm(tmp_path / "out")
    torch.testing.assert_close(logits(loaded, IDS), logits(pruned, IDS))
    with pytest.raises(ConfigError, match="keeps 1"):
        transform.apply(gqa_llama(), None, transform.config_cls(mask=str(mask_path), kv_groups=2))
    with pytest.raises(ConfigError, match="--mask"):
        transform.apply(gqa_llama(), None, transform.config_cls())
