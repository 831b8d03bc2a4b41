"""TPLA decode for a converted MLA reader loaded by path (`reader.tp_shards`, transformers engine).

The engine loads the reader in float32 and `prepare_tpla` checks that it can be sharded, folds
the rotation the settings name into its weights (rotation.py) and installs TPLAAttention's
one-process simulation of g shards (sharded.py): prefill stays full MLA, decode steps run g
separate softmaxes over slices of the latent. The engine then casts the model to its dtype, so
the rotation is rounded once.

PCA is fitted on calibration text: a file `reader.tp_calib` names (what `save_calibration`
writes, scripts/transmla_calib.py), or by default the conversion's own calibration text, rebuilt
from the record in backbone.json and checked against its sha256.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.manifest import read_manifest
from rearqa.reader.backbone.tpla.config import TPLAConfig

PCA_CALIB_SAMPLES = 32  # calibration samples whose latents PCA is fitted on (as scripts/tpla_error.py)
_CONVERT_HINT = "convert it first (rearqa convert --transform transmla | xecomla) or set reader.tp_shards: 0"


def check_tpla_manifest(model_dir: str | Path, cfg: TPLAConfig) -> None:
    """Refuse, before loading anything, a reader that was not converted to MLA."""
    if read_manifest(model_dir) is None:
        raise ConfigError(f"reader.tp_shards={cfg.shards}: TPLA splits the latent of a multi-head "
                          f"latent attention reader, and {model_dir} is a plain checkpoint (no "
                          f"backbone.json); {_CONVERT_HINT}")


def check_tpla_model(model: nn.Module, model_dir: str | Path, cfg: TPLAConfig) -> int:
    """The shard width, or a ConfigError: every layer must run MLAAttention, the shard count
    divide kv_lora_rank and the rotation suit that width (TPLAConfig.check_model)."""
    from rearqa.reader.backbone.transmla.modeling import MLAAttention

    layers = getattr(getattr(model, "model", None), "layers", None) or []
    kinds = sorted({type(layer.self_attn).__name__ for layer in layers
                    if not isinstance(layer.self_attn, MLAAttention)})
    if not layers or kinds:
        raise ConfigError(f"reader.tp_shards={cfg.shards}: {model_dir} runs {kinds or 'no'} attention "
                          f"layers, not MLAAttention; {_CONVERT_HINT}")
    return cfg.check_model(model.config, prefix="reader.tp_")


def pca_calibration(model_dir: str | Path, tokenizer, calib_file: str = "") -> torch.Tensor:
    """Token ids (n, T) to fit the PCA rotation on: from `calib_file`, else the conversion's own
    calibration text rebuilt from backbone.json's record."""
    from rearqa.reader.backbone.transmla.calibration import corpus_calibration, load_calibration

    if calib_file:
        try:
            tokens, _ = load_calibration(calib_file)
        except ValueError as exc:
            raise ConfigError(f"reader.tp_calib={calib_file!r}: {exc}") from exc
        return tokens[:PCA_CALIB_SAMPLES]
    record = read_manifest(model_dir).calibration
    fix = ("give reader.tp_calib (--tp-calib): a calibration file scripts/transmla_calib.py writes, "
           "or choose tp_rotation 'none'")
    source = Path(record.get("source", ""))
    if not record or not source.is_file():
        raise ConfigError(f"tp_rotation 'pca' is fitted on calibration text, and {model_dir}'s "
                          f"backbone.json names none readable here ({record.get('source')!r}); {fix}")
    tokens, _, rebuilt = corpus_calibration(tokenizer, source, record["n_samples"], record["n_tokens"],
                                            record["seed"])
    if rebuilt.sha256 != record.get("sha256"):
        raise ConfigError(f"tp_rotation 'pca': {source} no longer gives the calibration text {model_dir} "
                          f"was converted on (sha256 differs); {fix}")
    return tokens[:PCA_CALIB_SAMPLES]


def prepare_tpla(model: nn.Module, model_dir: str | Path, tokenizer, cfg: TPLAConfig,
                 calib_file: str = "") -> nn.Module:
    """`model` (the MLA reader in `model_dir`, float32) with the rotation of `cfg` folded in and
    TPLA's one-process g-shard decode installed (in place)."""
    from rearqa.reader.backbone.tpla.rotation import rotate_for_tpla
    from rearqa.reader.backbone.tpla.sharded import install_tpla

    check_tpla_model(model, model_dir, cfg)
    calib = pca_calibration(model_dir, tokenizer, calib_file) if cfg.rotation == "pca" else None
    with torch.no_grad():
        rotate_for_tpla(model, cfg, calib)
    return install_tpla(model, cfg.shards, nope_scale=cfg.nope_scale)
