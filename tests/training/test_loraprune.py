"""LoRAPrune's fine-tuning on a tiny GQA Llama: real gradients, the cubic schedule reaching the
targets, and the merged, pruned model equal to the masked LoRA model."""
from __future__ import annotations

import torch

from rearqa.reader.backbone.loraprune.config import LoRAPruneConfig
from rearqa.reader.backbone.loraprune.mask import PruneMask, install_mask
from rearqa.training.loraprune import Pruner, finetune_and_prune, merge_and_prune, window_batches


def gqa_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    from rearqa.testing import randomize_matrices

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=24, intermediate_size=20, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=4,
                         max_position_embeddings=64)
    return randomize_matrices(LlamaForCausalLM(config).eval(), std=0.1)


def test_finetune_prunes_on_the_schedule_and_merges_to_the_masked_function(tmp_path):
    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings

    model = wrap("lora", gqa_llama(), LoraSettings(r=2, alpha=4, dropout=0.0))
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": ids, "labels": ids}
               for ids in torch.randint(0, 40, (12, 2, 8), generator=gen)]
    cfg = LoRAPruneConfig(kv_groups=1, mlp_channels=8, prune_start=0.25, prune_end=0.75,
                          prune_every=2)
    *steps, pruner = finetune_and_prune(model, batches, cfg, total_steps=12, lr=1e-2)
    assert isinstance(pruner, Pruner) and len(steps) == 12
    events = [e for _, _, e in steps if e is not None]
    assert [e.step for e in events] == [4, 6, 8, 9]
    kept = [e.mlp_channels for e in events]
    assert kept == sorted(kept, reverse=True) and kept[-1] == 8 and events[-1].kv_groups == 1
    assert pruner.mask.kv_groups == 1 and pruner.mask.mlp_channels == 8

    saved = PruneMask.load(pruner.save(tmp_path))
    assert saved == pruner.mask and (tmp_path / "importance.json").is_file()

    ids = batches[0]["input_ids"]
    handles = install_mask(model, pruner.mask, pruner.shape)
    with torch.no_grad():
        masked = model(ids).logits
    for handle in handles:
        handle.remove()
    pruned = merge_and_prune(model, pruner.mask)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads,
            pruned.config.intermediate_size) == (3, 1, 8)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, masked, atol=1e-5, rtol=1e-5)


def test_window_batches_cycle_full_windows():
    from rearqa.training.data.token_rows import TokenRows

    rows = TokenRows.from_lists([[1, 2, 3], [4, 5, 6], [7, 8]], [[True] * 3, [True] * 3, [True] * 2])
    batches = list(window_batches(rows, 2, 3))
    assert len(batches) == 3 and all(b["input_ids"].shape == (2, 3) for b in batches)
    assert {tuple(r) for b in batches for r in b["input_ids"].tolist()} == {(1, 2, 3), (4, 5, 6)}
