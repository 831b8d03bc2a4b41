"""Head composition (rearqa.eval.heads): a constructed two-layer model with a known answer, the
factored computation against the dense definitions (W_OV formed, full SVDs, GQA by h // group),
the norm fold, the bounds, the CLI's two files, and the inputs it refuses."""
from __future__ import annotations

import json

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.eval.heads import composition, head_circuits
from rearqa.testing import randomize_matrices

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 24, 6, 2, 4  # GQA: query heads 0-2 share KV head 0, 3-5 KV head 1


def tiny_llama(seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32, hidden_size=HIDDEN, intermediate_size=16, num_hidden_layers=layers,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                         max_position_embeddings=32, tie_word_embeddings=True, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    return randomize_matrices(LlamaForCausalLM(config).eval())


def block(n: int) -> slice:
    """The n-th 4-dimensional block of the residual stream: e_{4n} .. e_{4n+3}."""
    return slice(4 * n, 4 * n + 4)


@torch.no_grad()
def channel_model():
    """Layer 0: query head h writes only into block h (its o_proj columns). Layer 1: query head 0
    reads block 0 (what layer-0 head 0 writes), query head 1 block 2 (orthogonal to it); KV head 0
    keys read block 0, KV head 1 keys block 3."""
    model = tiny_llama()
    first, second = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    o = torch.zeros(HIDDEN, HEADS * HEAD_DIM)
    for h in range(HEADS):
        o[block(h), h * HEAD_DIM:(h + 1) * HEAD_DIM] = torch.randn(4, HEAD_DIM)
    first.o_proj.weight.copy_(o)
    q = second.q_proj.weight.view(HEADS, HEAD_DIM, HIDDEN)
    k = second.k_proj.weight.view(KV_HEADS, HEAD_DIM, HIDDEN)
    for matrix, index, reads in ((q, 0, 0), (q, 1, 2), (k, 0, 0), (k, 1, 3)):
        matrix[index] = 0
        matrix[index][:, block(reads)] = torch.randn(HEAD_DIM, 4)
    return model


def test_a_head_reading_what_another_writes_composes_fully_and_an_orthogonal_one_not_at_all():
    comp = composition(channel_model(), rank=HEAD_DIM)
    q, k = comp.scores["subspace"]["q"], comp.scores["subspace"]["k"]
    assert q[0, 0, 1, 0] == pytest.approx(1.0, abs=1e-5)  # L1 head 0 reads block 0, L0 head 0 writes it
    assert q[0, 0, 1, 1] == pytest.approx(0.0, abs=1e-6)  # L1 head 1 reads block 2
    assert q[0, 2, 1, 1] == pytest.approx(1.0, abs=1e-5)  # ... which L0 head 2 writes
    assert comp.scores["frobenius"]["q"][0, 0, 1, 1] == pytest.approx(0.0, abs=1e-6)
    assert comp.scores["frobenius"]["q"][0, 0, 1, 0] > 0.3
    # GQA: KV head 0's keys read block 0, shared by query heads 0, 1, 2; KV head 1's block 3.
    assert k.shape == (2, HEADS, 2, KV_HEADS)
    assert k[0, 0, 1, 0] == pytest.approx(1.0, abs=1e-5) and k[0, 3, 1, 1] == pytest.approx(1.0, abs=1e-5)
    assert k[0, 0, 1, 1] == pytest.approx(0.0, abs=1e-6)
    per_head = comp.per_query_head("subspace", "k")
    assert torch.equal(per_head[0, 0, 1, :3], k[0, 0, 1, :1].expand(3))  # one score for the group


def test_a_norm_gain_that_zeroes_the_channel_kills_the_composition():
    model = channel_model()
    with torch.no_grad():
        model.model.layers[1].input_layernorm.weight[block(0)] = 0.0
    comp = composition(model, rank=HEAD_DIM)
    for measure in ("subspace", "frobenius"):
        assert comp.scores[measure]["q"][0, 0, 1, 0] == pytest.approx(0.0, abs=1e-6)
        assert comp.scores[measure]["k"][0, 0, 1, 0] == pytest.approx(0.0, abs=1e-6)
        assert comp.scores[measure]["q"][0, 2, 1, 1] > 0.3  # block 2 still passes


def dense_scores(model, rank: int):
    """The definitions, written out: W_OV^a = W_O^a W_V^{kv(a)} diag(gamma_i), R_b = W^b
    diag(gamma_j), full SVDs; scores for (layer 0 -> layer 1) as (H, N) per kind and measure."""
    group = HEADS // KV_HEADS
    first, second = model.model.layers[0], model.model.layers[1]
    g0, g1 = first.input_layernorm.weight.double(), second.input_layernorm.weight.double()
    o = first.self_attn.o_proj.weight.double()
    v0 = first.self_attn.v_proj.weight.double() * g0
    reads = {name: getattr(second.self_attn, f"{name}_proj").weight.double() * g1 for name in "qkv"}
    out = {}
    for kind, read in reads.items():
        readers = read.shape[0] // HEAD_DIM
        sub, frob = torch.zeros(HEADS, readers), torch.zeros(HEADS, readers)
        for a in range(HEADS):
            kv = a // group
            ov = o[:, a * HEAD_DIM:(a + 1) * HEAD_DIM] @ v0[kv * HEAD_DIM:(kv + 1) * HEAD_DIM]  # (D, D)
            u = torch.linalg.svd(ov).U[:, :rank]
            for b in range(readers):
                r_b = read[b * HEAD_DIM:(b + 1) * HEAD_DIM]
                v = torch.linalg.svd(r_b, full_matrices=False).Vh[:rank].T
                sub[a, b] = (u.T @ v).norm() / rank ** 0.5
                frob[a, b] = (r_b @ ov).norm() / (r_b.norm() * ov.norm())
        out[kind] = {"subspace": sub, "frobenius": frob}
    return out


@pytest.mark.parametrize("rank", [1, 3, HEAD_DIM])
def test_the_factored_scores_are_the_dense_definitions(rank, one_thread):
    model = tiny_llama(seed=3)
    with torch.no_grad():
        for layer in model.model.layers:  # gains that are not ones, so the fold shows
            layer.input_layernorm.weight.uniform_(0.2, 2.0)
    comp = composition(model, rank)
    expected = dense_scores(model, rank)
    for kind, by_measure in expected.items():
        for measure, want in by_measure.items():
            got = comp.scores[measure][kind][0, :, 1]
            assert torch.allclose(got, want.float(), atol=1e-4), (kind, measure, got, want)


def test_scores_are_bounds_and_only_later_layers_read(one_thread):
    comp = composition(tiny_llama(seed=1, layers=3), rank=2)
    for by_kind in comp.scores.values():
        for score in by_kind.values():
            later = score[0, :, 1:].flatten().tolist() + score[1, :, 2:].flatten().tolist()
            assert all(0.0 <= x <= 1.0 for x in later)
            assert torch.isnan(score[1, :, :2]).all() and torch.isnan(score[2]).all()


def test_the_write_factor_has_the_output_value_circuits_gram():
    model = tiny_llama(seed=2)
    circuits = head_circuits(model)
    layer = model.model.layers[1]
    a, kv = 4, 4 // (HEADS // KV_HEADS)
    v = layer.self_attn.v_proj.weight.double()[kv * HEAD_DIM:(kv + 1) * HEAD_DIM] * layer.input_layernorm.weight.double()
    ov = layer.self_attn.o_proj.weight.double()[:, a * HEAD_DIM:(a + 1) * HEAD_DIM] @ v
    write = circuits.write[1, a]
    assert torch.allclose(write @ write.T, ov @ ov.T, atol=1e-10)


def test_bad_inputs_are_refused():
    model = tiny_llama()
    with pytest.raises(ConfigError, match="choose 1..4"):
        composition(model, rank=HEAD_DIM + 1)
    del model.model.layers[1].self_attn.k_proj
    with pytest.raises(ConfigError, match="layers.1.self_attn has no k_proj"):
        composition(model)
    with pytest.raises(ConfigError, match="not a Llama-style causal LM"):
        composition(torch.nn.Linear(3, 3))


def test_the_cli_writes_scores_and_a_heatmap_and_refuses_a_file_for_out(tmp_path):
    from typer.testing import CliRunner

    from rearqa.app.cli import app
    from rearqa.app.inspect_cmd import inspect_heads

    reader = tmp_path / "reader"
    tiny_llama(layers=3).save_pretrained(reader)
    result = CliRunner().invoke(app, ["inspect", "heads", "--reader", str(reader), "--rank", "2",
                                      "--top", "5", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 1000
    assert scores["settings"]["rank"] == 2 and scores["model"]["kv_heads"] == KV_HEADS
    assert len(scores["layer_pairs"]["q/subspace"]["mean"]) == 3
    assert scores["layer_pairs"]["q/subspace"]["mean"][1][0] is None  # layer 1 does not feed layer 0
    assert len(scores["top_pairs"]["k"]) == 5 and scores["top_pairs"]["k"][0]["reader"].startswith("layers.")
    assert scores["weakest"]["kv_groups"][0]["query_heads"] in ([0, 1, 2], [3, 4, 5])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        inspect_heads(str(reader), tmp_path / "file")
    with pytest.raises(ConfigError, match="--rank 0"):
        inspect_heads(str(reader), tmp_path / "out", rank=0)
