"""X-EcoMLA as a registered backbone transform (the contract of reader/backbone/base.py).

`apply` runs the weight-only conversion (convert.py; no calibration text) and installs TransMLA's
MLA attention (transmla/modeling.py); `export` writes, with the latent RMSNorm, the DeepSeek-V3
checkpoint vLLM serves (transmla/export.py) and, without it, the same layout marked `hf_only`.
Per-layer ranks are saved zero-padded to the largest (one kv_lora_rank in config.json, the width
the cache holds); xecomla_report.json beside the weights lists each layer's own rank.
"""
from __future__ import annotations

from typing import Any

import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.transmla.transform import MLATransform
from rearqa.reader.backbone.xecomla.config import XEcoMLAConfig

REPORT_FILE = "xecomla_report.json"


class XEcoMLA(MLATransform):
    name = "xecomla"
    config_cls = XEcoMLAConfig
    report_file = REPORT_FILE
    report_attr = "xecomla_report"

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
