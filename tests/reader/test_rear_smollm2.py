"""REAR on the real SmolLM2-135M-Instruct: token ids, tied rows, one batched score, LoRA save size."""
import pytest
import torch

from rearqa.reader.rear import RearConfig, RearModel, add_lora, trainable_parameter_counts

pytestmark = pytest.mark.slow

PASSAGES = ["Hamlet is a tragedy written by William Shakespeare around 1600.",
            "Paris is the capital and largest city of France.",
            "The Nile is a major north-flowing river in northeastern Africa."]


def test_wrap_score_and_small_lora_save(reader_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reader_dir)
    lm = AutoModelForCausalLM.from_pretrained(reader_dir, dtype=torch.float32)
    model = RearModel.from_base(lm, tokenizer, RearConfig(use_chat_template=True),
                                base_model_dir=reader_dir)
    assert model.tied_embeddings and model.base_vocab_size == 49152
    assert model.token_ids.all_ids() == list(range(49152, 49158))
    assert model.causal_lm.get_output_embeddings().weight.shape == (49158, 576)
    scores = model.score_texts("Who wrote Hamlet?", PASSAGES)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    assert not scores.any()  # the <RANK_SCORE> row starts at zero

    add_lora(model, r=16, alpha=32, dropout=0.05)
    counts = trainable_parameter_counts(model)
    # 30 layers x r16 x (q 576+576, k 576+192, v 576+192, o 576+576, gate/up 576+1536 x2, down 1536+576)
    assert counts == {"lora": 4_884_480, "token_rows": 5 * 576, "rank_head": 0, "other": 0}
    path = model.save_pretrained(tmp_path / "rear")
    adapter = path / "adapter" / "adapter_model.safetensors"
    rows = {k: v.shape for k, v in load_file(adapter).items() if "lora_" not in k}
    assert list(rows.values()) == [(5, 576)]
    assert adapter.stat().st_size < 20_000_000  # fp32 LoRA + 5 rows, not the 113 MB embedding
