"""TransMLA as a registered backbone transform (the contract of reader/backbone/base.py).

`apply` runs the conversion (convert.py) on calibration text and installs the MLA attention
(modeling.py); `export` writes, with the latent RMSNorm, the DeepSeek-V3 checkpoint vLLM serves
(export.py) and, without it, the same layout marked `hf_only` (vLLM's DeepSeek model always
normalises the latent, so the function without the norm runs on the transformers engine only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from rearqa.files import atomic_write_text
from rearqa.reader.backbone.base import BackboneTransform
from rearqa.reader.backbone.transmla.config import TransMLAConfig

REPORT_FILE = "transmla_report.json"


class MLATransform(BackboneTransform):
    """What every GQA -> MLA transform shares: the converted model runs on MLAAttention
    (modeling.py), caches the latent and the rotary key, and is saved as a DeepSeek-V3 checkpoint
    vLLM serves when it has the latent norm (`hf_only` without it), with the conversion's report
    (`model.<report_attr>`) beside the weights as `report_file`."""

    export_format = "deepseek_v3_mla"
    report_file: ClassVar[str]
    report_attr: ClassVar[str]

    def export_format_for(self, cfg: Any) -> str:
        return "deepseek_v3_mla" if cfg.latent_norm else "hf_only"

    def kv_bytes_per_token(self, config: Any, dtype: torch.dtype | str) -> int:
        from rearqa.reader.backbone.transmla.modeling import mla_kv_bytes_per_token

        return mla_kv_bytes_per_token(config, dtype)  # the config's (padded) width: what the cache holds

    def save_weights(self, model: torch.nn.Module, out_dir: Path, cfg: Any) -> None:
        pad_v_to = getattr(cfg, "pad_v_to", 0)
        if cfg.latent_norm:
            from rearqa.reader.backbone.transmla.export import export_deepseek_v3

            export_deepseek_v3(model, out_dir, pad_v_to=pad_v_to)
        else:
            if pad_v_to:
                from rearqa.config_errors import ConfigError

                raise ConfigError(f"{self.name}.pad_v_to pads value heads for vLLM's prefill, which "
                                  f"needs {self.name}.latent_norm: true; set both or neither")
            model.save_pretrained(out_dir)
        report = getattr(model, self.report_attr, None)
        if report is not None:
            atomic_write_text(out_dir / self.report_file, json.dumps(report, indent=2, default=str) + "\n")

    def load(self, model_dir: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
        from rearqa.reader.backbone.transmla.modeling import load_mla

        return load_mla(model_dir, dtype)


class TransMLA(MLATransform):
    name = "transmla"
    config_cls = TransMLAConfig
    report_file = REPORT_FILE
    report_attr = "transmla_report"

    def label(self, settings: dict[str, Any]) -> str:
        norm = ", latent norm" if settings.get("latent_norm") else ""
        return f"transmla({settings.get('kv_lora_rank')}+{settings.get('rope_dim')}{norm})"

    def apply(self, model: torch.nn.Module, calib: Any, cfg: TransMLAConfig,
              progress: bool = False, record: Any = None, moments: Any = None) -> torch.nn.Module:
        """The MLA model converted from the GQA `model` on the calibration token batches `calib`
        (LongTensor (n, T); `record` says where they came from); the conversion's report
        (retained energy per layer, calibration) rides along as `model.transmla_report`.
        `moments` (convert.collect_kv_moments of `calib`) lets a sweep share one calibration pass."""
        from rearqa.reader.backbone.transmla.convert import convert
        from rearqa.reader.backbone.transmla.modeling import install_mla

        if calib is None:
            from rearqa.config_errors import ConfigError

            raise ConfigError("transmla needs calibration text (token batches); none was given")
        mla, report = convert(model, calib, cfg, progress=_bars() if progress else None,
                              record=record, moments=moments)
        mla = install_mla(mla)
        mla.transmla_report = report
        return mla


def _bars():
    """A progress callback (stage, done, total) drawing one tqdm bar per stage."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"transmla {stage}", unit="step")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update
