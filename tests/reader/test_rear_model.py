"""RearModel on tiny tied and untied Llamas: rows, padding, the head as an output row, training."""
import pytest
import torch
from transformers import LlamaForCausalLM

from rearqa.config_errors import ConfigError
from rearqa.reader.rear import (RearConfig, RearModel, RoutingConfig, build_rear_input,
                                collate_rear_inputs)
from rearqa.testing import tiny_llama, tiny_tokenizer

PASSAGES = ["hamlet is a tragedy written by shakespeare .", "paris is the capital of france",
            "the band was born in london in the year"]
QUESTION = "who wrote hamlet ?"


def make(tied=True, head="linear", seed=0, chat=False):
    tok = tiny_tokenizer()
    model = RearModel.from_base(tiny_llama(len(tok), tied, seed=seed), tok,
                                RearConfig(head=head, use_chat_template=chat))
    with torch.no_grad():  # a non-zero head, as after training
        model.causal_lm.get_output_embeddings().weight[model.token_ids.rank_score].normal_(std=1.0)
    return model


def batch(model, side, judgment=None, answer=None):
    inputs = [build_rear_input(model.tokenizer, p, QUESTION, judgment, answer,
                               use_chat_template=model.config.use_chat_template) for p in PASSAGES]
    return inputs, collate_rear_inputs(inputs, model.tokenizer.pad_token_id, side)


@pytest.mark.parametrize("tied", [True, False])
def test_from_base_resizes_once_and_initialises_rows(tied):
    tok = tiny_tokenizer()
    base_vocab = len(tok)
    lm = tiny_llama(base_vocab, tied)
    old_in = lm.get_input_embeddings().weight.detach().clone()
    model = RearModel.from_base(lm, tok)
    ids = model.token_ids
    inp = model.causal_lm.get_input_embeddings().weight
    out = model.causal_lm.get_output_embeddings().weight
    assert inp.shape[0] == out.shape[0] == base_vocab + 6 == len(tok)
    assert model.tied_embeddings is tied and model.base_vocab_size == base_vocab
    assert torch.equal(inp[:base_vocab], old_in)  # old rows untouched
    assert torch.allclose(inp[ids.relevant], old_in.mean(0))
    assert not out[ids.rank_score].any() and not out[ids.rank_ref].any()  # head starts at 0
    # idempotent: wrapping again adds nothing, resizes nothing, re-initialises nothing
    with torch.no_grad():
        out[ids.rank_score] = 1.0
    again = RearModel.from_base(model.causal_lm, tok)
    assert len(tok) == base_vocab + 6 and again.token_ids == ids
    assert again.causal_lm.get_input_embeddings().weight.shape[0] == base_vocab + 6
    assert (again.causal_lm.get_output_embeddings().weight[ids.rank_score] == 1.0).all()
    gen_suppressed = set(again.causal_lm.generation_config.suppress_tokens)
    assert set(again.suppressed_token_ids()) <= gen_suppressed


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_score_matches_unbatched_under_either_padding(tied, side):
    model = make(tied)
    inputs, b = batch(model, side)
    scores = model.score(b["input_ids"], b["attention_mask"])
    assert scores.shape == (3,) and scores.dtype == torch.float32
    for i, x in enumerate(inputs):
        one = model.score(torch.tensor([x.input_ids]), torch.ones(1, len(x.input_ids), dtype=torch.long))
        torch.testing.assert_close(scores[i], one[0], atol=1e-5, rtol=1e-5)
    assert scores.std() > 1e-3  # distinct passages, distinct scores


@pytest.mark.parametrize("tied", [True, False])
def test_linear_head_is_the_served_logit_difference(tied):
    """What vLLM reads: logit(<RANK_SCORE>) - logit(<RANK_REF>) at the last prompt token."""
    model = make(tied)
    ids = model.token_ids
    _, b = batch(model, "left")
    scores = model.score(b["input_ids"], b["attention_mask"])
    pos = (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    logits = model.causal_lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             position_ids=pos).logits[:, -1]  # (B, V), the plain CausalLM forward
    torch.testing.assert_close(scores, logits[:, ids.rank_score] - logits[:, ids.rank_ref])
    assert not logits[:, ids.rank_ref].any()  # the zero row contributes logit 0
    two = torch.log_softmax(logits[:, [ids.rank_score, ids.rank_ref]], dim=-1)  # allowed_token_ids
    torch.testing.assert_close(scores, two[:, 0] - two[:, 1], atol=1e-5, rtol=1e-5)
    hidden = model.hidden_states(b["input_ids"], b["attention_mask"])[:, -1]
    w = model.causal_lm.get_output_embeddings().weight[ids.rank_score]
    torch.testing.assert_close(scores, hidden @ w)  # h . w


@pytest.mark.parametrize("side", ["left", "right"])
def test_forward_gives_lm_and_rank_logits_from_one_pass(side):
    model = make()
    inputs, b = batch(model, side, "relevant", "shakespeare")
    out = model(b["input_ids"], b["attention_mask"])
    assert out.lm_logits.shape == (*b["input_ids"].shape, len(model.tokenizer))
    assert [int(p) for p in out.score_positions] == [
        x.score_position + (b["input_ids"].shape[1] - len(x.input_ids) if side == "left" else 0)
        for x in inputs]
    prompts = [build_rear_input(model.tokenizer, p, QUESTION, use_chat_template=False) for p in PASSAGES]
    pb = collate_rear_inputs(prompts, model.tokenizer.pad_token_id, "left")
    torch.testing.assert_close(out.rank_logits, model.score(pb["input_ids"], pb["attention_mask"]),
                               atol=1e-5, rtol=1e-5)  # later answer tokens do not leak back
    suppressed = out.lm_logits[..., model.suppressed_token_ids()]
    assert torch.isinf(suppressed).all() and (suppressed < 0).all()
    assert torch.isfinite(out.lm_logits[..., model.token_ids.relevant]).all()


def test_full_finetune_keeps_the_ref_row_zero():
    model = make()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    _, b = batch(model, "right", "relevant", "shakespeare")
    out = model(b["input_ids"], b["attention_mask"])
    labels = torch.where(b["labels"] == -100, 0, b["labels"])
    (out.rank_logits.sum() + out.lm_logits.log_softmax(-1).gather(-1, labels[..., None]).mean()).backward()
    weight = model.causal_lm.get_output_embeddings().weight
    assert not weight.grad[model.token_ids.rank_ref].any()
    before = weight[model.token_ids.rank_score].detach().clone()
    opt.step()
    assert not weight[model.token_ids.rank_ref].any()
    assert not torch.equal(weight[model.token_ids.rank_score], before)
    model.check_ref_row_zero()


@pytest.mark.parametrize("side", ["left", "right"])
def test_lowrank_attention_head(side):
    model = make(head="lowrank_attn", chat=True)
    assert model.rank_head is not None
    inputs, b = batch(model, side)
    scores = model.score(b["input_ids"], b["attention_mask"], b["passage_mask"])
    assert scores.shape == (3,)
    for i, x in enumerate(inputs):
        one = model.score(torch.tensor([x.input_ids]), torch.ones(1, len(x.input_ids), dtype=torch.long),
                          torch.tensor([x.passage_mask]))
        torch.testing.assert_close(scores[i], one[0], atol=1e-5, rtol=1e-5)
    # passage_mask matters; the default pools the whole prompt before <GENERATE_SCORE>
    assert not torch.allclose(scores, model.score(b["input_ids"], b["attention_mask"]))
    scores.sum().backward()
    assert all(p.grad is not None for p in model.rank_head.parameters())
    with pytest.raises(ValueError, match="pool"):
        model.score(b["input_ids"], b["attention_mask"], torch.zeros_like(b["passage_mask"]))


def test_score_texts_and_missing_score_token():
    model = make()
    scores = model.score_texts(QUESTION, PASSAGES)
    _, b = batch(model, "left")
    torch.testing.assert_close(scores, model.score(b["input_ids"], b["attention_mask"]).detach())
    with pytest.raises(ValueError, match="GENERATE_SCORE"):
        model.score(torch.tensor([[4, 5, 6]]), torch.ones(1, 3, dtype=torch.long))


def test_config_validation_names_the_value():
    with pytest.raises(ConfigError, match="rear.head='mlp'"):
        RearConfig(head="mlp")
    with pytest.raises(ConfigError, match="lowrank_rank=0"):
        RearConfig(lowrank_rank=0)
    assert RearConfig(routing={"threshold": 1.5}).routing == RoutingConfig(threshold=1.5)
    with pytest.raises(ConfigError, match="routing.fallback"):
        RoutingConfig(fallback="guess")


def test_linear_head_refuses_logit_softcapping():
    tok = tiny_tokenizer()
    lm = tiny_llama(len(tok))
    lm.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="lowrank_attn"):
        RearModel.from_base(lm, tok)


def test_fresh_base_with_an_extended_tokenizer_needs_init():
    tok = tiny_tokenizer()
    RearModel.from_base(tiny_llama(len(tok)), tok)  # tok now has the tokens
    fresh = LlamaForCausalLM(tiny_llama(len(tok)).config)
    with pytest.raises(ValueError, match="init_new_rows=True"):
        RearModel.from_base(fresh, tok)
    RearModel.from_base(fresh, tok, init_new_rows=True).check_ref_row_zero()


@pytest.mark.parametrize("tied", [True, False])
def test_trained_linear_head_serves_as_its_row_and_offset(tied, tmp_path):
    """Training's own head (fp32 weight, bias, centring) gives the same scores once exported into
    the <RANK_SCORE> row and config.rank_offset: in memory, as a LoRA checkpoint reloaded onto its
    base, and as the merged plain checkpoint the vLLM engine serves."""
    from rearqa.reader.rear import add_lora

    tok = tiny_tokenizer()
    tiny_llama(len(tok), tied=tied).save_pretrained(tmp_path / "base")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    model = RearModel.from_base(base, tok, RearConfig(), base_model_dir=tmp_path / "base")
    add_lora(model, r=2, alpha=4, dropout=0.0)
    assert model.tied_embeddings == tied  # read through PEFT's wrappers
    question, passages = "who wrote hamlet ?", ["hamlet is a tragedy", "paris is a city",
                                                "the band was born in london"]
    fresh = model.score_texts(question, passages)
    head = model.attach_linear_head(center=torch.randn(16))
    torch.testing.assert_close(model.score_texts(question, passages), fresh)  # attaching changes nothing
    with torch.no_grad():  # a head that training moved
        head.weight.copy_(torch.randn(16))
        head.bias.fill_(-1.25)
    trained = model.score_texts(question, passages)
    model.save_pretrained(tmp_path / "lora")  # exports the head into the row and the offset
    assert model.config.rank_offset != 0.0
    model.merge_to_plain_checkpoint(tmp_path / "plain")
    model.linear_head = None  # serving reads the row and the offset
    torch.testing.assert_close(model.score_texts(question, passages), trained)
    for path in ("lora", "plain"):
        reloaded = RearModel.from_pretrained(tmp_path / path, base_model_dir=tmp_path / "base")
        assert reloaded.linear_head is None and reloaded.config.rank_offset == model.config.rank_offset
        torch.testing.assert_close(reloaded.score_texts(question, passages), trained)
        reloaded.check_ref_row_zero()
