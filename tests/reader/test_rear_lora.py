"""LoRA on the REAR model: what is trainable, and what one optimiser step may change."""
import pytest
import torch

from rearqa.reader.rear import (RearConfig, RearModel, add_lora, build_rear_input,
                                collate_rear_inputs, trainable_parameter_counts)
from rearqa.reader.rear.lora import no_decay_parameter_names
from rearqa.testing import tiny_llama, tiny_tokenizer
from rearqa.training.losses import compute_rear_loss, rear_lm_loss_and_rank

D = 16  # hidden size of tiny_llama
# LoRA r=4 on q,o (16->16), k,v (16->8), gate,up (16->32), down (32->16), 2 layers:
# 4 * (32 + 24 + 24 + 32 + 48 + 48 + 48) * 2 = 2048
LORA_PARAMS = 2048


def make(tied=True, head="linear"):
    tok = tiny_tokenizer()
    model = RearModel.from_base(tiny_llama(len(tok), tied), tok, RearConfig(head=head))
    return add_lora(model, r=4, alpha=8, dropout=0.0)


def effective_matrices(model):
    """(V, D) input and output matrices as the forward pass sees them (through PEFT wrappers)."""
    lm = model.causal_lm
    vocab = lm.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        inp = lm.get_input_embeddings()(torch.arange(vocab)).clone()
        out = lm.get_output_embeddings()(torch.eye(D)).T.clone()  # no bias in Llama
    return inp, out


def test_all_linear_leaves_the_output_layer_alone():
    model = make()
    names = [n for n, _ in model.lm.named_modules() if n.endswith("lora_A")]
    assert names and not any("lm_head" in n for n in names)
    assert len(names) == 2 * 7  # q k v o gate up down in each of 2 layers


@pytest.mark.parametrize("tied,head,rows", [(True, "linear", 5), (False, "linear", 4 + 3),
                                            (True, "lowrank_attn", 4)])
def test_trainable_parameters_are_exactly_lora_rows_and_head(tied, head, rows):
    model = make(tied, head)
    counts = trainable_parameter_counts(model)
    head_params = sum(p.numel() for p in model.rank_head.parameters()) if model.rank_head else 0
    assert counts == {"lora": LORA_PARAMS, "token_rows": rows * D, "rank_head": head_params,
                      "other": 0}
    assert no_decay_parameter_names(model)  # the rows, stored by value


@pytest.mark.parametrize("tied", [True, False])
def test_a_step_moves_new_rows_only_and_ref_stays_zero(tied):
    model = make(tied)
    model.train()
    ids = model.token_ids
    before_in, before_out = effective_matrices(model)
    inputs = [build_rear_input(model.tokenizer, p, "who wrote hamlet ?", j, "shakespeare",
                               use_chat_template=False)
              for p, j in [("hamlet is a tragedy", "relevant"), ("paris is a city", "irrelevant")]]
    b = collate_rear_inputs(inputs, model.tokenizer.pad_token_id, "right")
    out = model(b["input_ids"], b["attention_mask"])
    loss = compute_rear_loss(out.lm_logits, b["labels"], out.rank_logits, torch.tensor([1.0, 0.0]),
                             group_ids=torch.tensor([0, 0]))["loss"]
    loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05,
                      weight_decay=0.0).step()
    after_in, after_out = effective_matrices(model)
    base = model.base_vocab_size
    assert torch.equal(after_in[:base], before_in[:base])  # old vocabulary frozen
    assert torch.equal(after_out[:base], before_out[:base])
    moved_in = [ids.begin_query, ids.generate_score, ids.relevant, ids.irrelevant]
    for i in moved_in:
        assert not torch.equal(after_in[i], before_in[i]), i
    for i in (ids.relevant, ids.irrelevant, ids.rank_score):
        assert not torch.equal(after_out[i], before_out[i]), i
    assert not after_out[ids.rank_ref].any() and not after_in[ids.rank_ref].any()
    model.check_ref_row_zero()


def test_add_lora_twice_or_bad_rank_is_refused():
    model = make()
    with pytest.raises(ValueError, match="already"):
        add_lora(model)
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="r=0"):
        add_lora(RearModel.from_base(tiny_llama(len(tok)), tok), r=0)


@pytest.mark.parametrize("head", ["linear", "lowrank_attn"])
def test_lm_loss_and_rank_equal_the_full_logits_path(head):
    """Training's memory-saving path (output layer at labelled and score positions only) gives
    the loss and the gradients that forward's full (B, T, V) logits give."""
    tok = tiny_tokenizer()
    model = RearModel.from_base(tiny_llama(len(tok), tied=False), tok, RearConfig(head=head))
    add_lora(model, r=4, alpha=8, dropout=0.0)
    model.train()
    inputs = [build_rear_input(model.tokenizer, p, "who wrote hamlet ?", j, "shakespeare",
                               use_chat_template=False)
              for p, j in [("hamlet is a tragedy", "relevant"), ("paris is a city", "irrelevant")]]
    b = collate_rear_inputs(inputs, model.tokenizer.pad_token_id, "right")
    mask = b["passage_mask"] if head != "linear" else None
    grades, groups = torch.tensor([1.0, 0.0]), torch.tensor([0, 0])
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(fast: bool):
        model.zero_grad(set_to_none=True)
        if fast:
            lm, rank = rear_lm_loss_and_rank(model, b["input_ids"], b["attention_mask"], b["labels"], mask)
            parts = compute_rear_loss(None, b["labels"], rank, grades, groups, lm=lm)
        else:
            out = model(b["input_ids"], b["attention_mask"], mask)
            parts = compute_rear_loss(out.lm_logits, b["labels"], out.rank_logits, grades, groups)
        parts["loss"].backward()
        return parts, [p.grad.clone() if p.grad is not None else None for p in params]

    full, full_grads = loss_and_grads(False)
    fast, fast_grads = loss_and_grads(True)
    for key in ("loss", "lm", "rank"):
        assert fast[key].item() == pytest.approx(full[key].item(), rel=1e-5, abs=1e-6)
    for a, g in zip(full_grads, fast_grads):
        assert (a is None) == (g is None)
        if a is not None:
            torch.testing.assert_close(g, a, rtol=1e-4, atol=1e-6)
