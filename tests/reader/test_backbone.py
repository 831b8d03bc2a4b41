"""The backbone wing's seam: backbone.json, loading a converted reader by path, KV bytes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import TRANSFORMS, BackboneManifest, get_transform, read_manifest, write_manifest
from rearqa.reader.backbone.base import BackboneTransform, dense_kv_bytes_per_token
from rearqa.reader.backbone.config import TransformConfig
from rearqa.reader.backbone.loading import check_vllm_servable, load_causal_lm
from rearqa.testing import tiny_llama, tiny_tokenizer


class HalfKV(BackboneTransform):
    """A test transform: the weights unchanged, the manifest claiming half the dense KV bytes, and
    `load` marking the model, so a test can see which loader ran."""

    name = "test-half-kv"
    config_cls = TransformConfig
    export_format = "hf_only"

    def apply(self, model, calib, cfg):
        return model

    def kv_bytes_per_token(self, config, dtype):
        return dense_kv_bytes_per_token(config, dtype) // 2

    def save_weights(self, model, out_dir: Path, cfg) -> None:
        model.save_pretrained(out_dir)

    def load(self, model_dir: Path, dtype=None):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir)
        model.loaded_by = self.name
        return model


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(TRANSFORMS, HalfKV.name, HalfKV)


def test_dense_kv_bytes_of_the_real_reader(reader_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(reader_dir)  # SmolLM2-135M: 30 layers, 3 KV heads of 64
    assert dense_kv_bytes_per_token(config, torch.bfloat16) == 2 * 30 * 3 * 64 * 2 == 23040
    assert dense_kv_bytes_per_token(config, "float32") == 46080
    with pytest.raises(ValueError, match="KV bytes are known for"):
        dense_kv_bytes_per_token(config, torch.int8)


def test_converted_reader_loads_by_path_through_its_transform(registered, tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok)).eval()
    transform = get_transform(HalfKV.name)
    manifest_path = transform.export(transform.apply(model, None, TransformConfig()), tmp_path,
                                     TransformConfig(seed=3))
    saved = json.loads(manifest_path.read_text())
    assert saved["transform"] == HalfKV.name and saved["export_format"] == "hf_only"
    assert saved["settings"] == {"seed": 3} and saved["dtype"] == "float32"
    assert saved["kv_bytes_per_token"] == dense_kv_bytes_per_token(model.config, torch.float32) // 2

    loaded = load_causal_lm(tmp_path)
    assert loaded.loaded_by == HalfKV.name
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    with pytest.raises(ConfigError, match="only the transformers engine runs"):
        check_vllm_servable(tmp_path)


def test_plain_checkpoint_loads_as_before(tmp_path):
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(tmp_path)
    assert read_manifest(tmp_path) is None
    assert not hasattr(load_causal_lm(tmp_path), "loaded_by")
    check_vllm_servable(tmp_path)  # a plain checkpoint: nothing to refuse
    write_manifest(tmp_path, BackboneManifest("kv_merge", "llama_fewer_kv"))
    check_vllm_servable(tmp_path)  # a stock Llama layout: vLLM loads it


def test_bad_manifests_are_clear_errors(tmp_path):
    path = tmp_path / "backbone.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        read_manifest(tmp_path)
    path.write_text(json.dumps({"transform": "x", "export_format": "onnx"}))
    with pytest.raises(ConfigError, match="export_format='onnx'; choose one of"):
        read_manifest(tmp_path)
    path.write_text(json.dumps({"transform": "x", "export_format": "hf_only", "colour": 1}))
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colour'\]"):
        read_manifest(tmp_path)
    path.write_text(json.dumps({"transform": "no-such-method", "export_format": "hf_only"}))
    with pytest.raises(ConfigError, match="unknown backbone transform 'no-such-method'; valid transforms are"):
        load_causal_lm(tmp_path)
