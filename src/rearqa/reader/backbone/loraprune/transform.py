"""LoRAPrune as a registered backbone transform (the contract of reader/backbone/base.py).

The mask is chosen while a LoRA is fine-tuned (rearqa.training.loraprune); the transform only
applies a saved mask: `apply` slices the (LoRA-merged) model to `cfg.mask` (prune.py), and
`export` writes a stock Llama checkpoint with the mask beside it as loraprune_mask.json. So
`rearqa convert --transform loraprune --from CHECKPOINT --mask MASK.json` rebuilds the pruned
reader on the CPU from the source checkpoint and the mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.base import BackboneTransform, dense_kv_bytes_per_token
from rearqa.reader.backbone.loraprune.config import LoRAPruneConfig
from rearqa.reader.backbone.loraprune.mask import PruneMask

MASK_FILE = "loraprune_mask.json"


class LoRAPrune(BackboneTransform):
    name = "loraprune"
    config_cls = LoRAPruneConfig
    export_format = "llama_pruned"
    setting_copies = {"mask": MASK_FILE}

    def label(self, settings: dict[str, Any]) -> str:
        return f"loraprune({settings.get('kv_groups')} kv, {settings.get('mlp_channels')} mlp)"

    def apply(self, model: torch.nn.Module, calib: Any, cfg: LoRAPruneConfig,
              progress: bool = False, **_: Any) -> torch.nn.Module:
        """`model` pruned to the mask file `cfg.mask`; `cfg.kv_groups` / `cfg.mlp_channels` are
        filled from the mask (and must agree with it when set). `calib` must be None."""
        from rearqa.reader.backbone.loraprune.prune import prune_model

        if calib is not None:
            raise ConfigError("loraprune reads no calibration text: its mask comes from training")
        if not cfg.mask:
            raise ConfigError("loraprune converts to a saved mask: give --mask MASK.json (written "
                              "by the LoRAPrune fine-tuning, rearqa.training.loraprune)")
        mask = PruneMask.load(cfg.mask)
        mask.check_model(cfg.check_model(model.config))
        for name in ("kv_groups", "mlp_channels"):
            given, masked = getattr(cfg, name), getattr(mask, name)
            if given and given != masked:
                raise ConfigError(f"loraprune.{name}={given}, but the mask {cfg.mask} keeps {masked}")
            setattr(cfg, name, masked)
        _schedule_from_run(cfg)
        pruned = prune_model(model, mask)
        pruned.loraprune_mask = mask
        return pruned

    def kv_bytes_per_token(self, config: Any, dtype: torch.dtype | str) -> int:
        return dense_kv_bytes_per_token(config, dtype)  # fewer KV heads, same layout

    def save_weights(self, model: torch.nn.Module, out_dir: Path, cfg: LoRAPruneConfig) -> None:
        model.save_pretrained(out_dir)
        mask = getattr(model, "loraprune_mask", None)
        if mask is not None:
            mask.save(out_dir / MASK_FILE)

    def load(self, model_dir: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
        from transformers import LlamaForCausalLM

        kwargs = {"dtype": dtype} if dtype is not None else {}
        return LlamaForCausalLM.from_pretrained(model_dir, **kwargs)



def _schedule_from_run(cfg: LoRAPruneConfig) -> None:
    """A mask written by a training run has its record beside it (loraprune.json: the schedule
    that chose it); its ema / prune_start / prune_end / prune_every go into `cfg`, so
    backbone.json records how the mask was chosen, not the config's defaults."""
    import json

    record = Path(cfg.mask).with_name("loraprune.json")
    if not record.is_file():
        return
    try:
        schedule = json.loads(record.read_text(encoding="utf-8")).get("schedule", {})
        values = (schedule["ema"], schedule["every"], schedule["prune_start"], schedule["prune_end"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return  # a record of another shape: the settings stay as given
    cfg.ema, cfg.prune_every, cfg.prune_start, cfg.prune_end = values
