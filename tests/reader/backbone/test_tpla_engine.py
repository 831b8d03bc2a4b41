"""TPLA decode in the transformers engine (reader.tp_shards): a tiny converted MLA reader loaded by
path generates what TPLA installed by hand generates, one shard is full MLA bit for bit, two are
an approximation, and settings TPLA cannot run are refused with the values that would do."""
from __future__ import annotations

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import BackboneManifest, write_manifest
from rearqa.reader.backbone.loading import backbone_label
from rearqa.reader.backbone.tpla.config import TPLAConfig
from rearqa.reader.backbone.tpla.rotation import rotate_for_tpla
from rearqa.reader.backbone.tpla.sharded import TPLAAttention, install_tpla
from rearqa.reader.backbone.transmla.calibration import CalibrationRecord, save_calibration
from rearqa.reader.backbone.transmla.modeling import load_mla
from rearqa.reader.baseline import BaselineReader
from rearqa.reader.config import ReaderConfig
from rearqa.reader.engines.hf import HFEngine
from rearqa.testing import tiny_deepseek, tiny_llama, tiny_tokenizer

# Over 16 tokens once templated, so the prompt is prefilled by full MLA (ABSORB_MAX_QUERY).
QUESTIONS = [[{"role": "user", "content": "who wrote the play hamlet ? the tragedy hamlet was written "
                                          "by shakespeare in england , in the year of the city"}],
             [{"role": "user", "content": "what is the capital of france ? paris is the capital city "
                                          "of france , on the river"}]]


def save_reader(out, rank: int):
    """A tiny DeepSeek-V3 MLA reader (latent norm with a non-trivial gamma) saved as `rearqa
    convert` leaves one: weights, tokenizer, backbone.json."""
    model = tiny_deepseek(rank=rank, rope=8, nope=16, v=16, heads=3, norm=True)
    model.config.max_position_embeddings = 128
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.kv_a_layernorm.weight.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    write_manifest(out, BackboneManifest(transform="transmla", export_format="deepseek_v3_mla",
                                         settings={"kv_lora_rank": rank, "rope_dim": 8, "latent_norm": True}))
    return out


@pytest.fixture(scope="module")
def reader16(tmp_path_factory):
    return save_reader(tmp_path_factory.mktemp("mla16"), rank=16)


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    torch.manual_seed(7)
    tokens = torch.randint(6, 49, (8, 24))
    return str(save_calibration(tmp_path_factory.mktemp("calib") / "calib.json", tokens,
                                CalibrationRecord.of(tokens, "test tokens", 0)))


def greedy(engine, model=None, steps: int = 8):
    """Greedy tokens (B, steps) and their logits (B, steps, V) for QUESTIONS through `engine`'s
    encoding and generation settings, on `model` (default: the engine's)."""
    inputs = engine._encode(QUESTIONS)
    kwargs = engine._generation_kwargs(steps) | {"eos_token_id": None, "min_new_tokens": steps}
    with torch.inference_mode():
        out = (model or engine.model).generate(**inputs, output_logits=True, return_dict_in_generate=True,
                                               **kwargs)
    return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits, 1)


def by_hand(reader_dir, cfg: TPLAConfig, calib=None):
    model = load_mla(reader_dir, torch.float32)
    rotate_for_tpla(model, cfg, calib)
    return install_tpla(model, cfg.shards).eval()


@pytest.mark.parametrize("rotation", ["none", "hadamard", "pca"])
def test_the_engine_decodes_as_tpla_installed_by_hand(one_thread, reader16, calib_file, rotation):
    cfg = TPLAConfig(shards=2, rotation=rotation)
    engine = HFEngine(reader16, "float32", tpla=cfg, tpla_calib=calib_file)
    assert all(isinstance(layer.self_attn, TPLAAttention) for layer in engine.model.model.layers)
    from rearqa.reader.backbone.transmla.calibration import load_calibration

    calib = load_calibration(calib_file)[0] if rotation == "pca" else None
    tokens, logits = greedy(engine)
    hand_tokens, hand_logits = greedy(engine, by_hand(reader16, cfg, calib))
    assert torch.equal(tokens, hand_tokens)
    torch.testing.assert_close(logits, hand_logits, rtol=0, atol=0)


def test_one_shard_without_rotation_is_full_mla_exactly(one_thread, reader16):
    full = greedy(HFEngine(reader16, "float32"))
    one = greedy(HFEngine(reader16, "float32", tpla=TPLAConfig(shards=1, rotation="none")))
    assert torch.equal(one[0], full[0])
    torch.testing.assert_close(one[1], full[1], rtol=0, atol=0)


def test_two_shards_are_an_approximation_of_full_mla(one_thread, reader16):
    full_tokens, full_logits = greedy(HFEngine(reader16, "float32"))
    tokens, logits = greedy(HFEngine(reader16, "float32", tpla=TPLAConfig(shards=2, rotation="hadamard")))
    # The first token comes from the prefill, which stays full MLA; the decode steps differ.
    torch.testing.assert_close(logits[:, 0], full_logits[:, 0], rtol=1e-5, atol=1e-5)
    assert (logits[:, 1:] - full_logits[:, 1:]).abs().max() > 1e-3


def test_the_reader_config_reaches_the_engine_and_the_label(one_thread, reader16):
    config = ReaderConfig(dtype="float32", tp_shards=2, tp_rotation="hadamard")
    reader = BaselineReader(config, reader16)
    assert reader.engine.tpla == config.tpla()
    assert isinstance(reader.engine.model.model.layers[0].self_attn, TPLAAttention)
    assert backbone_label(reader16, config.tpla()) == "transmla(16+8, latent norm) + tpla(2 shards, hadamard)"
    assert backbone_label(reader16) == "transmla(16+8, latent norm)"


def test_settings_tpla_cannot_run_are_refused(one_thread, reader16, tmp_path):
    plain = tmp_path / "llama"
    tiny_llama(49).save_pretrained(plain)
    tiny_tokenizer().save_pretrained(plain)
    with pytest.raises(ConfigError, match="plain checkpoint.*rearqa convert --transform transmla"):
        HFEngine(plain, "float32", tpla=TPLAConfig(shards=2, rotation="none"))
    with pytest.raises(ConfigError, match=r"reader.tp_shards=3: kv_lora_rank 16 splits evenly into one of \[1, 2, 4, 8, 16\]"):
        HFEngine(reader16, "float32", tpla=TPLAConfig(shards=3, rotation="none"))
    rank24 = save_reader(tmp_path / "mla24", rank=24)
    with pytest.raises(ConfigError, match="reader.tp_rotation='hadamard'.*power of two.*24.*'pca'"):
        HFEngine(rank24, "float32", tpla=TPLAConfig(shards=2, rotation="hadamard"))
    with pytest.raises(ConfigError, match="pca.*tp_calib"):  # no calibration record in its backbone.json
        HFEngine(rank24, "float32", tpla=TPLAConfig(shards=2, rotation="pca"))


def test_reader_settings_tpla_cannot_run_are_refused():
    with pytest.raises(ConfigError, match="engine 'hf' only.*vLLM"):
        ReaderConfig(engine="vllm", tp_shards=2)
    with pytest.raises(ConfigError, match=r"tp_rotation='random': choose one of \['none', 'hadamard', 'pca'\]"):
        ReaderConfig(tp_shards=2, tp_rotation="random")
    with pytest.raises(ConfigError, match="tp_shards=-1"):
        ReaderConfig(tp_shards=-1)
    with pytest.raises(ConfigError, match="not 'rear'"):
        ReaderConfig(method="rear", tp_shards=2)
    assert ReaderConfig().tpla() is None


def test_snapshot_runs_name_the_decode_mode_next_to_the_backbone(reader16):
    from rearqa.eval.bundle import SnapshotPipeline
    from rearqa.eval.rear_runs import SnapshotRunConfig

    def label(config):
        run = SnapshotRunConfig(config, "snapshot", {"base_model": str(reader16)})
        return SnapshotPipeline(None, [], reader=None, config=run).backbone

    assert label(ReaderConfig(tp_shards=2, tp_rotation="pca")) == "transmla(16+8, latent norm) + tpla(2 shards, pca)"
    assert label(ReaderConfig()) == "transmla(16+8, latent norm)"
