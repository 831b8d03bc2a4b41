"""X-EcoMLA as a registered backbone transform (the contract of reader/backbone/base.py).

`apply` runs the weight-only conversion (convert.py; no calibration text) and installs TransMLA's
MLA attention (transmla/modeling.py); `export` writes, with the latent RMSNorm, the DeepSeek-V3
checkpoint vLLM serves (transmla/export.py) and, without it, the same layout marked `hf_only`.
Per-layer ranks are saved zero-padded to the largest (one kv_lora_rank in config.json, the width
the cache holds); xecomla_report.json beside the weights lists each layer's own rank.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write_text
from rearqa.reader.backbone.base import BackboneTransform
from rearqa.reader.backbone.xecomla.config import XEcoMLAConfig

REPORT_FILE = "xecomla_report.json"


class XEcoMLA(BackboneTransform):
    name = "xecomla"
    config_cls = XEcoMLAConfig
    export_format = "deepseek_v3_mla"

    def export_format_for(self, cfg: XEcoMLAConfig) -> str:
        return "deepseek_v3_mla" if cfg.latent_norm else "hf_only"

    def label(self, settings: dict[str, Any]) -> str:
        rank = settings.get("kv_lora_rank") or f"energy {settings.get('energy')}"
        norm = ", latent norm" if settings.get("latent_norm") else ""
        return f"xecomla({rank}+{settings.get('rope_dim')}{norm})"

    def apply(self, model: torch.nn.Module, calib: Any, cfg: XEcoMLAConfig,
              progress: bool = False, **_: Any) -> torch.nn.Module:
        """The MLA model upcycled from the GQA `model` by an SVD of its weights (`calib` must be
        None: the method reads no text); the conversion's report (per-layer ranks, kept energy)
        rides along as `model.xecomla_report`."""
        from rearqa.reader.backbone.transmla.modeling import install_mla
        from rearqa.reader.backbone.xecomla.convert import convert

        if calib is not None:
            raise ConfigError("xecomla initialises from the weights alone and takes no "
                              "calibration text; pass calib=None")
        mla, report = convert(model, cfg)
        mla = install_mla(mla)
        mla.xecomla_report = report
        return mla

    def kv_bytes_per_token(self, config: Any, dtype: torch.dtype | str) -> int:
        from rearqa.reader.backbone.transmla.modeling import mla_kv_bytes_per_token

        return mla_kv_bytes_per_token(config, dtype)  # the padded width: what the cache holds

    def save_weights(self, model: torch.nn.Module, out_dir: Path, cfg: XEcoMLAConfig) -> None:
        if cfg.latent_norm:
            from rearqa.reader.backbone.transmla.export import export_deepseek_v3

            export_deepseek_v3(model, out_dir)
        else:
            model.save_pretrained(out_dir)
        report = getattr(model, "xecomla_report", None)
        if report is not None:
            atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")

    def load(self, model_dir: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
        from rearqa.reader.backbone.transmla.modeling import load_mla

        return load_mla(model_dir, dtype)
