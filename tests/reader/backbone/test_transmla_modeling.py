"""The MLA attention module: the same function as transformers' DeepseekV3Attention on both of
its paths, a cache holding only the latent and the rotary key, and a round trip through disk."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from rearqa.reader.backbone.base import dense_kv_bytes_per_token
from rearqa.reader.backbone.transmla.modeling import (MLAAttention, install_mla, load_mla,
                                                      measured_kv_bytes, mla_kv_bytes_per_token)
from rearqa.testing import tiny_deepseek

SHAPES = [  # (kv_lora_rank, rope, nope, v, heads)
    (24, 8, 16, 16, 3),
    (16, 32, 32, 64, 9),  # X-EcoMLA's SmolLM2 widths, value wider than the key
    (40, 16, 16, 32, 4),
]


def deepseek(rank=24, rope=8, nope=16, v=16, heads=3, norm=True, impl="sdpa", seed=0):
    """A random 2-layer dense DeepseekV3ForCausalLM (rearqa.testing.tiny_deepseek)."""
    return tiny_deepseek(rank, rope, nope, v, heads, norm, impl, seed)


def batch(seed=1):
    torch.manual_seed(seed)
    ids = torch.randint(3, 50, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    ids[0, :4] = 0
    return ids, mask


def set_path(model, absorb: bool):
    for layer in model.model.layers:
        layer.self_attn.absorb_max_query = 10**9 if absorb else 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_both_paths_equal_the_stock_attention(one_thread, shape, norm, impl):
    stock = deepseek(*shape, norm=norm, impl=impl)
    mla = install_mla(copy.deepcopy(stock))
    assert all(isinstance(layer.self_attn, MLAAttention) for layer in mla.model.layers)
    ids, mask = batch()
    with torch.no_grad():
        expected = stock(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        for absorb in (False, True):
            set_path(mla, absorb)
            got = mla(input_ids=ids, attention_mask=mask).logits
            assert torch.isfinite(got).all()  # padding queries too: no NaN reaches the next layer
            torch.testing.assert_close(got[mask.bool()], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", [True, False])
def test_token_by_token_absorbed_decode_equals_one_prefill(one_thread, norm):
    mla = install_mla(deepseek(16, 32, 32, 64, 9, norm=norm))
    ids, mask = batch()
    with torch.no_grad():
        set_path(mla, absorb=False)
        full = mla(input_ids=ids, attention_mask=mask).logits  # (B, T, V) expanded prefill
        set_path(mla, absorb=True)
        out = mla(input_ids=ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        cache, steps = out.past_key_values, [out.logits]
        for t in range(6, ids.shape[1]):
            out = mla(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                      past_key_values=cache, use_cache=True)
            steps.append(out.logits)
    got = torch.cat(steps, dim=1)
    torch.testing.assert_close(got[mask.bool()], full[mask.bool()], rtol=1e-4, atol=1e-4)


def test_greedy_generation_matches_the_stock_model(one_thread):
    stock = deepseek(16, 32, 32, 64, 9)
    mla = install_mla(copy.deepcopy(stock))
    ids, mask = batch()
    kwargs = {"attention_mask": mask, "max_new_tokens": 10, "do_sample": False}
    assert torch.equal(stock.generate(input_ids=ids, **kwargs), mla.generate(input_ids=ids, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_cache_holds_exactly_the_declared_bytes(one_thread, dtype, shape):
    mla = install_mla(deepseek(*shape)).to(dtype)
    ids, mask = batch()
    out = mla.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5,
                       do_sample=False, return_dict_in_generate=True)
    cached_tokens = ids.shape[0] * (out.sequences.shape[1] - 1)  # the last token is never cached
    rank, rope = shape[:2]
    declared = mla_kv_bytes_per_token(mla.config, dtype)
    assert declared == 2 * (rank + rope) * (4 if dtype == torch.float32 else 2)
    assert measured_kv_bytes(out.past_key_values) == declared * cached_tokens


def test_a_smollm2_latent_is_smaller_than_its_gqa_cache():
    from transformers import DeepseekV3Config, LlamaConfig

    gqa = LlamaConfig(num_hidden_layers=30, hidden_size=576, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64)
    mla = DeepseekV3Config(num_hidden_layers=30, kv_lora_rank=96, qk_rope_head_dim=64)
    assert dense_kv_bytes_per_token(gqa, torch.bfloat16) == 23040
    assert mla_kv_bytes_per_token(mla, torch.bfloat16) == 9600  # 2.4x smaller


@pytest.mark.parametrize("norm", [True, False])
def test_save_and_load_keep_the_function_and_the_missing_norm(one_thread, tmp_path, norm):
    mla = install_mla(deepseek(norm=norm))
    mla.save_pretrained(tmp_path)
    loaded = load_mla(tmp_path, torch.float32)
    assert isinstance(loaded.model.layers[0].self_attn.kv_a_layernorm,
                      torch.nn.Identity if not norm else torch.nn.Module)
    assert isinstance(loaded.model.layers[0].self_attn.kv_a_layernorm, torch.nn.Identity) != norm
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits,
                                   mla(input_ids=ids, attention_mask=mask).logits)


def test_a_lora_wrapped_up_projection_decodes_through_the_adapter(one_thread):
    from peft import LoraConfig, get_peft_model

    mla = install_mla(deepseek(16, 32, 32, 64, 9))
    peft_model = get_peft_model(mla, LoraConfig(r=4, target_modules=["kv_b_proj"], init_lora_weights=False))
    ids, mask = batch()
    with torch.no_grad():
        out = peft_model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True)
        step = peft_model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=out.past_key_values,
                          use_cache=True).logits[:, -1]
        merged = peft_model.merge_and_unload()  # the adapter in the weights: absorbed decode again
        expected = merged(input_ids=ids, attention_mask=mask).logits[:, -1]
    torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("masked", [False, True])
def test_a_decode_step_through_the_kernel_op_equals_the_torch_path(one_thread, dtype, masked):
    """On the CPU the op runs its reference, which must give MLAAttention's numbers bit for bit."""
    attn = install_mla(deepseek(16, 32, 32, 64, 9)).model.layers[0].self_attn.to(dtype)
    torch.manual_seed(2)
    q_nope, q_rot = torch.randn(3, 9, 1, 32, dtype=dtype), torch.randn(3, 9, 1, 32, dtype=dtype)
    latent, k_rot = torch.randn(3, 1, 11, 16, dtype=dtype), torch.randn(3, 1, 11, 32, dtype=dtype)
    mask = None
    if masked:  # left padding of 4 and 1 tokens, as transformers' sdpa mask (B, 1, 1, S) bool
        mask = torch.ones(3, 1, 1, 11, dtype=torch.bool)
        mask[0, ..., :4] = False
        mask[2, ..., :1] = False
    with torch.no_grad():
        want = attn._absorbed_torch(q_nope, q_rot, latent, k_rot, mask)
        got = attn._decode_step(q_nope, q_rot, latent, k_rot, mask)
    assert torch.equal(got, want)


def test_decode_steps_run_the_kernel_op_and_other_steps_do_not(one_thread, monkeypatch):
    from rearqa.kernels.mla_decode import mla_decode_reference
    from rearqa.reader.backbone.transmla import modeling

    calls = []
    monkeypatch.setattr(modeling, "mla_decode", lambda *a, **k: calls.append(1) or mla_decode_reference(*a, **k))
    mla = install_mla(deepseek(16, 32, 32, 64, 9))
    ids, mask = batch()
    with torch.no_grad():
        out = mla(input_ids=ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        assert not calls  # a prefill of 6 tokens takes the torch path
        mla(input_ids=ids[:, 6:7], attention_mask=mask[:, :7], past_key_values=out.past_key_values,
            use_cache=True)
    assert len(calls) == len(mla.model.layers)
    with torch.enable_grad():  # a step that keeps a graph stays on torch (no kernel backward)
        assert not modeling._kernel_step(1, None, torch.ones(1, requires_grad=True))
    assert not modeling._kernel_step(1, torch.zeros(1, 1, 1, 4), torch.ones(1))  # additive mask


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                    reason="needs a CUDA GPU and triton (the GPU machine; CI has neither)")
def test_decode_on_the_gpu_runs_the_triton_kernel(monkeypatch):
    """bf16 on CUDA: each decode step's attention is the Triton kernel, and the steps' logits stay
    within bf16 rounding of the same model decoding through the torch reference."""
    from rearqa.kernels.mla_decode import mla_decode

    mla = install_mla(deepseek(16, 32, 32, 64, 9)).to("cuda", torch.bfloat16)
    ids, mask = (t.cuda() for t in batch())
    runs = {}
    for backend in ("auto", "reference"):
        monkeypatch.setenv("REARQA_KERNELS", backend)
        with torch.no_grad():
            out = mla(input_ids=ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
            steps = [mla(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                         past_key_values=out.past_key_values, use_cache=True).logits.float()
                     for t in range(6, ids.shape[1])]
        runs[backend] = torch.cat(steps, 1)
    monkeypatch.setenv("REARQA_KERNELS", "auto")
    assert mla_decode.backend(torch.ones(1, device="cuda")) == "triton"
    error = (runs["auto"] - runs["reference"]).norm() / runs["reference"].norm()
    assert error < 2e-2, f"kernel decode differs from the torch path by {error:.2e}"
