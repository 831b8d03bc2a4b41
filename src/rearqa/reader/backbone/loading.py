"""Loading a reader's causal LM by path, converted or not.

A directory with a backbone.json is loaded by the transform it names (which may install its own
attention modules); any other directory is a plain transformers checkpoint. Every place that
loads a reader's weights (the transformers engine, REAR checkpoints, fine-tuned readers) goes
through `load_causal_lm`, and the vLLM engine asks `check_vllm_servable` first.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.manifest import read_manifest


def load_causal_lm(model_dir: str | Path, dtype: torch.dtype | None = None,
                   trust_remote_code: bool = False) -> torch.nn.Module:
    """The causal LM saved in `model_dir`."""
    manifest = read_manifest(model_dir)
    if manifest is None:
        from transformers import AutoModelForCausalLM

        kwargs = {"dtype": dtype} if dtype is not None else {}
        return AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust_remote_code,
                                                    **kwargs)
    from rearqa.reader.backbone import get_transform

    return get_transform(manifest.transform).load(Path(model_dir), dtype)


def source_kind(source: str | Path, option: str = "--from") -> str:
    """"base", "rear", "adapter" or "model" for a reader given as `option` (the bundled base, a
    REAR checkpoint, a PEFT adapter or a transformers checkpoint); a clear error otherwise."""
    if str(source) == "base":
        return "base"
    path = Path(source).expanduser()
    if (path / "rear_config.json").is_file():
        return "rear"
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "model"
    raise ConfigError(f"{option} {source}: not 'base', a transformers checkpoint (config.json), a "
                      "PEFT adapter (adapter_config.json) or a REAR checkpoint (rear_config.json)")


def check_vllm_servable(model_dir: str | Path) -> None:
    """Raise ConfigError when `model_dir` holds a converted reader that stock vLLM cannot load."""
    manifest = read_manifest(model_dir)
    if manifest is not None and not manifest.vllm_servable:
        raise ConfigError(f"{model_dir} holds a {manifest.transform!r} reader exported as "
                          f"{manifest.export_format!r}, which only the transformers engine runs; "
                          "set reader.engine: hf")


def backbone_label(model_dir: str | Path | None, tpla=None, inference: str = "") -> str:
    """What /health, answers and eval reports call the backbone in `model_dir`: the transform and
    its main settings for a converted reader ("transmla(96+64)"), "original" otherwise; with
    `tpla` (a TPLAConfig: reader.tp_shards set) its decode mode after it
    ("transmla(192+64) + tpla(2 shards, pca)"); with `inference` (reader.backbone: an
    inference-time backbone string) its canonical budgets after that
    ("original + spatten:tokens=0.6,heads=1,...")."""
    manifest = read_manifest(model_dir) if model_dir else None
    label = "original" if manifest is None else manifest.label
    label = label if tpla is None else f"{label} + {tpla.label}"
    return f"{label} + {inference_label(inference)}" if inference else label


def inference_label(text: str) -> str:
    """The canonical label of an inference-time backbone string ("spatten:tokens=0.6" ->
    "spatten:tokens=0.6,heads=1,...": every budget, so reports name exactly what ran)."""
    from rearqa.reader.backbone import inference_backbone

    method, cfg = inference_backbone(text)
    return method.label(cfg)
