"""SpAtten on tiny Llamas: exact at full budgets; the cascade never revives a token; alive counts
follow the schedule; importance is normalised by how many queries see a token; head pruning
cascades and zeroes the pruned heads; progressive quantisation's bytes match a hand count; local
value pruning keeps its share; bad budgets are refused; the evidence rate on a made-up prompt."""
from __future__ import annotations

import math

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.spatten.attention import CACHE_BYTES, SpAttenRun, install, track
from rearqa.reader.backbone.spatten.config import SpAttenConfig, keep_count, parse_budgets
from rearqa.reader.backbone.spatten.evidence import prompt_evidence_rate
from rearqa.reader.backbone.spatten.state import DECODE, PREFILL, SpAttenState
from rearqa.testing import randomize_matrices

LAYERS, HEADS, KV_HEADS = 4, 4, 2


def small_llama(seed: int = 0):
    """4 layers, 4 query heads over 2 KV heads of width 8, random weights at std 0.3."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         max_position_embeddings=128, pad_token_id=1, bos_token_id=2, eos_token_id=3)
    model = randomize_matrices(LlamaForCausalLM(config).eval())
    model.set_attn_implementation("eager")
    return model


def batch(length: int = 20, pad: int = 3, seed: int = 1):
    """Two prompts of `length`, the first left-padded by `pad`."""
    torch.manual_seed(seed)
    ids = torch.randint(4, 64, (2, length))
    mask = torch.ones_like(ids)
    mask[0, :pad] = 0
    return ids, mask


def spatten_llama(budgets: str):
    model = small_llama()
    install(model, parse_budgets(budgets))
    return model


def generate(model, max_new_tokens: int = 6):
    ids, mask = batch()
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                              output_logits=True, return_dict_in_generate=True, pad_token_id=1)


# ------------------------------------------------------------------ parity at full budgets

def test_full_budgets_equal_eager_in_prefill_and_greedy_decode():
    plain, ours = small_llama(), spatten_llama("spatten:start_layer=0,recent=1")
    ids, mask = batch()
    with torch.no_grad():
        assert torch.allclose(ours(input_ids=ids, attention_mask=mask).logits,
                              plain(input_ids=ids, attention_mask=mask).logits, atol=1e-6, rtol=0)
    a, b = generate(plain), generate(ours)
    assert torch.equal(a.sequences, b.sequences)
    for x, y in zip(a.logits, b.logits):
        assert torch.allclose(x, y, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ the cascade

def record_calls(model):
    """Each attention call's (step, layer, allowed (B, T, S), alive snapshot) via the run's counter."""
    run = model.model.layers[0].self_attn.spatten_run
    calls, count = [], run._count

    def spy(state, layer, visible, valid, allowed, *rest):
        calls.append((state.step, layer, allowed.clone(), state.alive.clone()))
        return count(state, layer, visible, valid, allowed, *rest)

    run._count = spy
    return calls


def test_a_pruned_token_never_returns():
    model = spatten_llama("spatten:tokens=0.4,start_layer=1,recent=2")
    calls = record_calls(model)
    with track(model) as history:
        generate(model)
    stats = history[0]
    pruned_layer, pruned_step = stats.pruned_layer, stats.pruned_step
    assert (pruned_layer >= 0).sum() > 0 and stats.decode_steps == 5
    previous = None
    for step, layer, allowed, alive in calls:
        # every position pruned at this (step, layer) or before is masked for every query
        when = pruned_step * LAYERS + pruned_layer  # lexicographic (step, layer); -1 alive
        keys = allowed.shape[-1]
        gone = (pruned_layer[:, :keys] >= 0) & (when[:, :keys] <= step * LAYERS + layer)
        assert not (allowed & gone[:, None, :]).any()
        if previous is not None:  # monotone: alive now implies alive before (positions shared)
            shared = previous.shape[1]
            assert not (alive[:, :shared] & ~previous).any()
        previous = alive


def test_alive_count_follows_schedule():
    model = spatten_llama("spatten:tokens=0.5,start_layer=1,recent=1")
    with track(model) as history:
        generate(model, max_new_tokens=1)
    _, mask = batch()
    real = mask.sum(1).tolist()
    for layer in range(LAYERS):
        expected = [keep_count(0.5, n, layer, LAYERS, 1) for n in real]
        assert history[0].alive_tokens[PREFILL, layer].tolist() == expected
    assert history[0].alive_tokens[PREFILL, -1].tolist() == [math.ceil(n / 2) for n in real]


def test_importance_is_normalised_by_the_queries_that_can_see_a_token():
    # Token 0 is seen by 4 queries and gets 0.4 from most of them (raw 2.2); token 3 is seen by
    # one query only and gets 0.6 from it (raw 0.6). Per query that could see it, token 3 matters more.
    state = SpAttenState(SpAttenConfig(tokens=0.5, start_layer=0, recent=1), 1, 1, 1, torch.device("cpu"))
    state.grow(4)
    probs = torch.tensor([[1.0, 0, 0, 0], [0.4, 0.6, 0, 0], [0.4, 0.3, 0.3, 0], [0.4, 0, 0, 0.6]])
    allowed = torch.ones(4, 4, dtype=torch.bool).tril()[None]
    state.accumulate(probs[None, None], allowed, torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 1, 4, 2))
    assert state.received[0, 0] > state.received[0, 3]
    importance = state.importance()[0]
    assert importance[3] > importance[0] and torch.allclose(importance, torch.tensor(
        [2.2 / 4, 0.9 / 3, 0.3 / 2, 0.6 / 1], dtype=torch.float64))
    state.prune_tokens(0, torch.ones(1, 4, dtype=torch.bool))  # keep 2 of 4: token 3 is protected
    assert state.alive[0].tolist() == [True, False, False, True]


def test_a_window_counts_only_the_newest_queries_votes():
    # the same probabilities, only queries 2 and 3 voting: token 0 gets 0.8 from 2 queries, token 3
    # 0.6 from 1, token 1 0.3 from 2, token 2 0.3 from 2 (both voters see it); tokens stay alive
    state = SpAttenState(SpAttenConfig(tokens=0.5, start_layer=0, recent=1, window=2), 1, 1, 1,
                         torch.device("cpu"))
    state.grow(4)
    probs = torch.tensor([[1.0, 0, 0, 0], [0.4, 0.6, 0, 0], [0.4, 0.3, 0.3, 0], [0.4, 0, 0, 0.6]])
    allowed = torch.ones(4, 4, dtype=torch.bool).tril()[None]
    voters = torch.tensor([[False, False, True, True]])
    state.accumulate(probs[None, None], allowed, torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 1, 4, 2),
                     voters)
    assert torch.allclose(state.importance()[0], torch.tensor([0.8 / 2, 0.3 / 2, 0.3 / 2, 0.6 / 1],
                                                                dtype=torch.float64))
    assert state.head_importance[0, 0] == 8  # every alive query's output counts for the heads


def test_a_window_as_long_as_the_prompt_is_spattens_rule_and_a_short_one_differs():
    """window >= the prompt's length lets every query vote: the same importance and pruning as no
    window; a short window accumulates another importance (the same budget, other votes)."""
    from rearqa.reader.backbone.spatten.attention import attention_modules

    ids, mask = batch()
    runs = {}
    for budgets in ("spatten:tokens=0.5,start_layer=0", "spatten:tokens=0.5,start_layer=0,window=64",
                    "spatten:tokens=0.5,start_layer=0,window=4"):
        model = spatten_llama(budgets)
        with torch.no_grad(), track(model) as history:
            model(input_ids=ids, attention_mask=mask)
        state = attention_modules(model)[0].spatten_run.state
        runs[budgets] = (history[0].pruned_layer, state.importance())
    (plain_pruned, plain), (wide_pruned, wide), (_, short) = runs.values()
    assert torch.equal(plain_pruned, wide_pruned) and (plain_pruned >= 0).any()
    assert torch.equal(plain, wide) and not torch.allclose(plain, short)
    assert parse_budgets("spatten:window=4").label.endswith("window=4")
    assert "window" not in parse_budgets("spatten:tokens=0.5").label  # labels before the setting hold


def test_prefill_0_reads_the_prompt_whole_and_prunes_from_the_first_decode_step():
    """prefill=0: the prefill's logits are the eager model's (nothing pruned, 1x its FLOPs), every
    pruned token was pruned in a decode step, and from the second step on every layer keeps the
    last layer's share; the cascade still never revives a token."""
    budgets = "spatten:tokens=0.5,start_layer=1,recent=1"
    plain, ours = small_llama(), spatten_llama(budgets + ",prefill=0")
    ids, mask = batch()
    with torch.no_grad():
        logits = ours(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(logits, spatten_llama("spatten:start_layer=0,recent=1")(input_ids=ids, attention_mask=mask).logits)
        assert torch.allclose(logits, plain(input_ids=ids, attention_mask=mask).logits, atol=1e-6, rtol=0)
    calls = record_calls(ours)
    with track(ours) as history:
        out = generate(ours)
    stats = history[0]
    first = generate(plain, max_new_tokens=1)
    assert torch.equal(out.sequences[:, :first.sequences.shape[1]], first.sequences)  # token 1 unpruned
    pruned = stats.pruned_layer >= 0
    assert pruned.any() and (stats.pruned_step[pruned] >= 1).all()
    assert stats.ratio("flops", PREFILL) == 1 and stats.ratio("flops", DECODE) < 0.75
    real = mask.sum(1).tolist()
    assert stats.alive_tokens[PREFILL].tolist() == [real] * LAYERS
    previous = None
    for step, layer, allowed, alive in calls:
        if previous is not None:
            assert not (alive[:, :previous.shape[1]] & ~previous).any()
        previous = alive
        if step >= 2:  # every layer reads at most the last layer's share of the prompt
            prompt_alive = alive[:, :ids.shape[1]] & mask.bool()
            assert (prompt_alive.sum(1) <= torch.tensor([math.ceil(n / 2) for n in real])).all()
    # the last decode step's last layer keeps the schedule's share of the real tokens (5 generated)
    assert stats.alive_tokens[DECODE, -1].tolist() == [math.ceil((n + 5) / 2) for n in real]
    assert parse_budgets(budgets + ",prefill=0").label.endswith("prefill=0")
    assert "prefill" not in parse_budgets(budgets).label  # the labels from before the setting hold


# ------------------------------------------------------------------ head pruning

def test_head_pruning_cascades_and_zeroes_the_pruned_heads():
    model = spatten_llama("spatten:heads=0.5,start_layer=1,recent=1")
    run = model.model.layers[0].self_attn.spatten_run
    seen = []  # per layer: (head_alive, head importance before this layer's pruning, o_proj input)
    prune = SpAttenState.prune_heads

    def spy(state, layer):
        before = state.head_importance.clone()
        prune(state, layer)
        seen.append([layer, state.head_alive.clone(), before])

    SpAttenState.prune_heads = spy
    try:
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.register_forward_hook(
                lambda mod, args, out, i=i: seen[i].append(args[0].detach().clone()))
        ids, mask = batch()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        SpAttenState.prune_heads = prune
    head_dim = model.config.hidden_size // HEADS
    previous = torch.ones(2, HEADS, dtype=torch.bool)
    for layer, alive, importance, o_input in seen:
        assert not (alive & ~previous).any()  # a pruned head stays pruned
        assert alive.sum(1).tolist() == [keep_count(0.5, HEADS, layer, LAYERS, 1)] * 2
        per_head = o_input.view(2, -1, HEADS, head_dim)  # (B, T, H, D)
        assert (per_head[~alive[:, None, :].expand(-1, per_head.shape[1], -1)] == 0).all()
        assert (per_head.abs().sum((1, 3))[alive] > 0).all()
        newly = previous & ~alive
        for b in range(2):  # the heads pruned here are the least important of those alive
            if newly[b].any():
                worst = importance[b].masked_fill(~previous[b], float("inf")).topk(
                    int(newly[b].sum()), largest=False).indices
                assert set(worst.tolist()) == set(newly[b].nonzero().flatten().tolist())
        previous = alive
    assert run.state.head_alive.sum(1).tolist() == [2, 2]
    # the stats name each pruned head with the layer it was pruned from, the first layer it is dead
    first_dead = [[next((layer for layer, alive, *_ in seen if not alive[b, h]), -1)
                   for h in range(HEADS)] for b in range(2)]
    assert run.state.stats.pruned_heads.tolist() == first_dead


# ------------------------------------------------------------------ progressive quantisation

def test_progressive_quantisation_counts_the_bytes_by_hand():
    """One layer, 2 heads over 2 KV heads, dim 8: at the decode step head 0's softmax is peaked (MSBs
    only), head 1's is flat (LSBs refetched); 5 tokens alive."""
    dim, bits, msb = 8, 8, 3
    cfg = SpAttenConfig(start_layer=0, recent=1, key_bits=msb, quant_bits=bits, flat=0.5)
    run = SpAttenRun(cfg, num_layers=1, heads=2)
    torch.manual_seed(0)
    keys = torch.randn(1, 2, 5, dim)
    values = torch.randn(1, 2, 5, dim)
    run.attend(0, torch.randn(1, 2, 4, dim), keys[:, :, :4], values[:, :, :4], None, 1.0)  # prefill
    query = torch.zeros(1, 2, 1, dim)
    query[0, 0, 0] = 50 * keys[0, 0, 2] / keys[0, 0, 2].norm()  # head 0 peaks on token 2; head 1 is 0: uniform
    out, _ = run.attend(0, query, keys, values, None, 1.0)
    counts = run.state.stats.counts
    msb_bytes = 5 * 2 * dim * msb / 8  # 5 tokens x 2 KV heads x dim at 3 bits
    lsb_bytes = 5 * 1 * dim * (bits - msb) / 8  # head 1's keys only
    value_bytes = 5 * 2 * dim * CACHE_BYTES
    assert counts["kv_bytes"][DECODE, 0, 0].item() == msb_bytes + lsb_bytes + value_bytes
    assert counts["dense_kv_bytes"][DECODE, 0, 0].item() == 5 * 2 * dim * 2 * CACHE_BYTES
    assert counts["flat_rows"][DECODE, 0, 0].item() == 1 and counts["rows"][DECODE, 0, 0].item() == 2
    # QK over 5 keys per head, once more for the flat head; PV over 5 values per head
    assert counts["flops"][DECODE, 0, 0].item() == 2 * dim * 5 * 2 + 2 * dim * 5 + 2 * dim * 5 * 2
    assert torch.allclose(out[0, 0, 1], values[0, 1].mean(0), atol=1e-6)  # the flat head: a plain mean


# ------------------------------------------------------------------ local value pruning

def test_local_value_pruning_keeps_its_share():
    run = SpAttenRun(SpAttenConfig(values=0.3, start_layer=0), num_layers=1, heads=2)
    torch.manual_seed(0)
    probs = torch.rand(2, 2, 5, 10).softmax(-1)
    allowed = torch.ones(2, 5, 10, dtype=torch.bool).tril(5)
    probs = probs.masked_fill(~allowed[:, None], 0)
    kept = run._kept_values(probs, allowed)
    share = torch.ceil(allowed.sum(-1) * 0.3).long()  # (B, T)
    assert torch.equal(kept.sum(-1), share[:, None].expand(-1, 2, -1))
    # the kept ones are the largest of each row
    smallest_kept = probs.masked_fill(~kept, 2).amin(-1)
    largest_dropped = probs.masked_fill(kept | ~allowed[:, None], -1).amax(-1)
    assert (smallest_kept > largest_dropped).all()


def test_pruned_budgets_save_flops_and_bytes():
    model = spatten_llama("spatten:tokens=0.5,heads=0.75,key_bits=4,values=0.5,start_layer=1,recent=2")
    with track(model) as history:
        generate(model)
    summary = history[0].summary()
    assert summary["decode_flops_ratio"] < 0.6 and summary["decode_kv_bytes_ratio"] < 0.6
    assert summary["prefill_flops_ratio"] < 1


# ------------------------------------------------------------------ budgets

@pytest.mark.parametrize("text", ["spatten:tokens=0", "spatten:tokens=1.5", "spatten:heads=-1",
                                  "spatten:values=0", "spatten:key_bits=9", "spatten:flat=2",
                                  "spatten:recent=0", "spatten:tokens=lots", "spatten:start_layer=1.5",
                                  "spatten:keep=0.5", "spatten:tokens", "spattn:tokens=0.5",
                                  "spatten:quant_bits=1", "spatten:window=-1", "spatten:window=2.5",
                                  "spatten:prefill=2", "spatten:prefill=0.5"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ConfigError):
        parse_budgets(text)


def test_budgets_parse_and_check_the_model():
    cfg = parse_budgets("spatten: tokens=0.6, heads=0.8,key_bits=4 ,flat=0.2,values=0.9,recent=8")
    assert (cfg.tokens, cfg.heads, cfg.key_bits, cfg.flat, cfg.values, cfg.recent) == (0.6, 0.8, 4, 0.2, 0.9, 8)
    assert parse_budgets(cfg.label) == cfg and parse_budgets("spatten") == SpAttenConfig()
    with pytest.raises(ConfigError, match="start_layer"):
        install(small_llama(), parse_budgets("spatten:start_layer=4"))


# ------------------------------------------------------------------ evidence

def test_evidence_rate_on_a_constructed_prompt():
    text = "Q? [1] Paris is the capital of France. [2] Lyon is large. Answer:"
    words = [(m.start(), m.end()) for m in __import__("re").finditer(r"\S+", text)]
    passages = [(text.index("[1]"), text.index("[2]")), (text.index("[2]"), text.index("Answer"))]
    pruned = [-1] * len(words)
    paris = next(i for i, (a, b) in enumerate(words) if text[a:b] == "Paris")
    lyon = next(i for i, (a, b) in enumerate(words) if text[a:b] == "Lyon")
    pruned[paris] = 5
    pruned[lyon] = 3  # pruned, but not an answer
    rate = prompt_evidence_rate(text, words, passages, ["paris", "Capital of France"], pruned)
    # "Paris" (pruned at layer 5) and "capital", "of", "France." (alive)
    assert (rate.answer_tokens, rate.pruned, dict(rate.by_layer)) == (4, 1, {5: 1})
    assert rate.share == 0.25
    none = prompt_evidence_rate(text, words, passages, ["Berlin"], pruned)
    assert none.answer_tokens == 0 and none.share is None
    with pytest.raises(ValueError, match="padding"):
        prompt_evidence_rate(text, words, passages, ["Paris"], pruned + [-1])


# ------------------------------------------------------------------ wiring

@pytest.mark.parametrize("fields,match", [
    (dict(backbone="spatten:tokens=2"), "tokens"),
    (dict(backbone="spatten", engine="vllm"), "engine 'hf' only"),
    (dict(backbone="h2o:tokens=0.5"), "one of \\['spatten'\\]")])
def test_reader_config_refuses_what_cannot_run(fields, match):
    from rearqa.reader.config import ReaderConfig

    with pytest.raises(ConfigError, match=match):
        ReaderConfig(**fields)


def test_hf_engine_generates_with_spatten_and_names_it(tmp_path):
    from rearqa.reader.backbone.loading import backbone_label
    from rearqa.reader.engines.hf import HFEngine
    from rearqa.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    budgets = "spatten:tokens=0.5,start_layer=1,recent=2"
    engine = HFEngine(tmp_path, "float32", backbone=budgets)
    plain = HFEngine(tmp_path, "float32")
    assert engine.model.config._attn_implementation == "spatten"
    assert engine.backbone == parse_budgets(budgets).label
    assert backbone_label(tmp_path, inference=budgets) == f"original + {engine.backbone}"
    messages = [[{"role": "user", "content": "the cat sat on the mat . what sat ?"}]]
    with track(engine.model) as history:
        engine.generate(messages, max_new_tokens=3)
    assert history and (history[0].pruned_layer >= 0).any()
    assert plain.backbone == "" and plain.generate(messages, max_new_tokens=3)
