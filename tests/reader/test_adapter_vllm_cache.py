"""Making an adapter servable on vLLM without vLLM (adapters/vllm_lora.py): a plain LoRA is served
as it is; a rearqa method is exported once into a content-addressed cache directory (the same
adapter and base map to one directory, reused; another base to another) whose plain LoRA, loaded
by plain PEFT, gives the custom adapter's merged model; an approximate export (MASA) is served with
a warning naming its error; an input-gated GDV-LoRA and features vLLM's loader rejects are refused
from adapter_config.json alone. Tiny Llama (STYLE rule 6); the vLLM side is
test_finetuned_vllm.py."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters import wrap
from rearqa.reader.adapters.dvlora.config import DVLoraSettings
from rearqa.reader.adapters.hydra.config import HydraSettings
from rearqa.reader.adapters.lora.config import LoraSettings
from rearqa.reader.adapters.masa.config import MasaSettings
from rearqa.reader.adapters.vllm_lora import (merged_checkpoint_dir, plain_lora_problem,
                                              vllm_adapter_problem, vllm_lora_dir)
from rearqa.reader.config import ReaderConfig, resolve_adapter
from rearqa.testing import moved_off_init, tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def base(tmp_path, seed: int = 0):
    path = tmp_path / f"base-{seed}"
    if not path.exists():
        tiny_llama(64, seed=seed).save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
    return path


def saved_adapter(tmp_path, name: str, settings, label: str = ""):
    """`name` on the tiny base, its tensors moved off their init, saved beside a tokenizer whose
    eos is <|im_start|> (as the shipped rag-ft adapter's)."""
    model = moved_off_init(wrap(name, tiny_llama(64), settings).eval(), seed=5)
    out = tmp_path / (label or name)
    model.save_pretrained(out)
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = "<|im_start|>"
    tokenizer.save_pretrained(out)
    return out, model


def test_a_plain_lora_is_served_as_it_is(tmp_path):
    adapter, _ = saved_adapter(tmp_path, "lora", LoraSettings(r=8, alpha=16, dropout=0.0))
    assert vllm_lora_dir(adapter, base(tmp_path), cache_root=tmp_path / "exports") == adapter
    assert not (tmp_path / "exports").exists()


def test_a_rearqa_method_is_exported_once_into_a_content_addressed_dir(tmp_path, monkeypatch):
    from peft import PeftModel

    from rearqa.reader.adapters import export
    from rearqa.reader.engines import saved_eos_id

    settings = HydraSettings(r=8, alpha=16, dropout=0.0, sequential_r=4, sequential_alpha=8, init="random")
    adapter, model = saved_adapter(tmp_path, "hydra", settings)
    cache = tmp_path / "exports"
    served = vllm_lora_dir(adapter, base(tmp_path), cache_root=cache)
    assert served.parent == cache and len(served.name) == 64  # a sha256
    assert [p.name for p in cache.iterdir()] == [served.name]  # no scratch dir left behind
    saved = json.loads((served / "adapter_config.json").read_text())
    assert "rearqa_method" not in saved and saved["r"] == 12  # r + r_s
    assert json.loads((served / "rearqa_export.json").read_text())["exact"] is True
    tokenizer = tiny_tokenizer()
    assert saved_eos_id(tokenizer, served) == saved_eos_id(tokenizer, adapter) \
        == tokenizer.convert_tokens_to_ids("<|im_start|>")  # the saved eos travels with the export

    # Plain PEFT loads the export, and merged it is the custom adapter merged.
    ids = torch.tensor([[5, 17, 33, 8, 9, 40, 7]])
    plain = PeftModel.from_pretrained(tiny_llama(64), served).merge_and_unload()
    torch.testing.assert_close(plain(ids).logits, model.merge_and_unload()(ids).logits,
                               rtol=1e-4, atol=1e-4)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "export_lora", no_export)
    assert vllm_lora_dir(adapter, base(tmp_path), cache_root=cache) == served  # reused
    # Hydra's exported A holds A_s W0: over another base it is another export.
    with pytest.raises(AssertionError, match="exported again"):
        vllm_lora_dir(adapter, base(tmp_path, seed=1), cache_root=cache)


def test_an_approximate_export_is_served_with_its_error_logged(tmp_path, caplog):
    adapter, _ = saved_adapter(tmp_path, "masa", MasaSettings(r=4, alpha=8, dropout=0.0, atoms=2,
                                                              init="random"))
    with caplog.at_level(logging.WARNING, logger="rearqa.reader.adapters.vllm_lora"):
        served = vllm_lora_dir(adapter, base(tmp_path), cache_root=tmp_path / "exports")
    record = json.loads((served / "rearqa_export.json").read_text())
    assert record["exact"] is False
    [warning] = [r.getMessage() for r in caplog.records]
    assert "APPROXIMATE" in warning and "masa" in warning
    assert f"max {record['approximation']['relative_error_max']:.3g}" in warning


def test_an_input_gated_adapter_is_refused_before_any_model_loads(tmp_path, monkeypatch):
    from rearqa.reader.backbone import loading

    adapter, _ = saved_adapter(tmp_path, "dvlora", DVLoraSettings(r=8, alpha=16, dropout=0.0,
                                                                  gate="input", init="random"))
    monkeypatch.setattr(loading, "load_causal_lm", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match=r"cannot be served on reader.engine 'vllm': .*depends on "
                                          r"the input.*Use reader.engine: hf"):
        vllm_lora_dir(adapter, base(tmp_path), cache_root=tmp_path / "exports")
    assert not (tmp_path / "exports").exists()
    # The config-level check (what the UI's unavailable readers show) says the same on vllm, and
    # on hf unless the adapter runs unmerged there.
    config = dict(method="rag-ft", adapter=str(adapter))
    assert resolve_adapter(ReaderConfig(engine="hf", hf_adapter="unmerged", **config)) == adapter
    with pytest.raises(ConfigError, match="cannot be merged.*reader.hf_adapter: unmerged"):
        resolve_adapter(ReaderConfig(engine="hf", **config))
    with pytest.raises(ConfigError, match="depends on the input"):
        resolve_adapter(ReaderConfig(engine="vllm", **config))


def test_the_ui_lists_an_adapter_vllm_cannot_serve_on_that_engine_only(tmp_path):
    from rearqa.app.ui import method_problem, unavailable_readers

    adapter, _ = saved_adapter(tmp_path, "dvlora", DVLoraSettings(r=8, alpha=16, dropout=0.0,
                                                                  gate="input", init="random"))
    config = ReaderConfig(checkpoint=str(tmp_path / "none"), adapter=str(adapter), hf_adapter="unmerged")
    assert method_problem("rag-ft", config) is None
    assert "cannot be merged" in method_problem("rag-ft", ReaderConfig(checkpoint=str(tmp_path / "none"),
                                                                     adapter=str(adapter)))
    assert "depends on the input" in method_problem("rag-ft", config, engine="vllm")
    vllm = unavailable_readers(ReaderConfig(engine="vllm", checkpoint=str(tmp_path / "none"),
                                            adapter=str(adapter)))
    assert list(vllm) == ["rear", "rag-ft", "closed-book-ft"]


def test_the_shipped_rag_ft_adapter_is_servable_as_it_is():
    from rearqa.reader.config import default_adapter_dir

    shipped = default_adapter_dir("rag-ft")
    if not (shipped / "adapter_config.json").is_file():
        pytest.skip("no shipped rag-ft adapter")
    assert vllm_adapter_problem(shipped) is None
    assert vllm_lora_dir(shipped, "unused: a plain LoRA needs no base") == shipped


@pytest.mark.parametrize("change, reason", [
    ({"use_dora": True}, "DoRA"),
    ({"trainable_token_indices": {"embed_tokens": [3]}}, "trained token rows"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "all"}, "bias='all'"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa'"),
    ({"r": 600}, "exceeds vLLM's largest max_lora_rank 512"),
    ({"rank_pattern": {"q_proj": 1024}}, "rank 1024"),
])
def test_features_vllms_loader_rejects_are_named(change, reason):
    saved = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "bias": "none", "init_lora_weights": True}
    assert plain_lora_problem(saved) is None
    assert plain_lora_problem({**saved, "init_lora_weights": "gaussian"}) is None
    assert reason in plain_lora_problem({**saved, **change})


def test_the_merged_default_writes_the_merged_checkpoint_once(tmp_path):
    """reader.vllm_adapter 'merged': the base with the adapter merged in fp32, a plain checkpoint
    (MASA exactly too, whose LoRA export is approximate), written once and reused; an update that
    is no weight is refused, and so is an unknown mode."""
    from transformers import AutoModelForCausalLM

    from rearqa.reader.adapters.masa.config import ATTENTION_PROJECTIONS

    cache = tmp_path / "exports"
    ids = torch.tensor([[5, 17, 33, 8, 9, 40, 7]])
    for name, settings in (("hydra", HydraSettings(r=8, alpha=16, dropout=0.0, sequential_r=4, init="random")),
                           ("masa", MasaSettings(r=4, alpha=8, dropout=0.0, atoms=2, init="random",
                                                 target=list(ATTENTION_PROJECTIONS)))):
        adapter, model = saved_adapter(tmp_path, name, settings)
        served = merged_checkpoint_dir(adapter, base(tmp_path), cache_root=cache)
        assert served.parent == cache and served.name.startswith("merged-")
        with torch.no_grad():
            expected = model.merge_and_unload()(ids).logits
            got = AutoModelForCausalLM.from_pretrained(served)(ids).logits
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        stamp = (served / "model.safetensors").stat().st_mtime_ns
        assert merged_checkpoint_dir(adapter, base(tmp_path), cache_root=cache) == served
        assert (served / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    gated, _ = saved_adapter(tmp_path, "dvlora", DVLoraSettings(r=4, alpha=8, dropout=0.0, gate="input"))
    with pytest.raises(ConfigError, match="cannot be merged.*engine: hf"):
        merged_checkpoint_dir(gated, base(tmp_path), cache_root=cache)
    with pytest.raises(ConfigError, match="vllm_adapter='unmerged'"):
        ReaderConfig(vllm_adapter="unmerged")
