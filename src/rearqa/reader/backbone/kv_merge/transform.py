"""KV-head merging as a registered backbone transform (the contract of reader/backbone/base.py).

`apply` merges the KV heads on calibration text (convert.py); the result is a plain model of the
source's class with fewer num_key_value_heads, saved with save_pretrained as `llama_fewer_kv`
(stock transformers and vLLM load it; backbone.json only records how it was made), with
kv_merge_report.json (the energy each layer's merge keeps) beside the weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write_text
from rearqa.reader.backbone.base import BackboneTransform, dense_kv_bytes_per_token
from rearqa.reader.backbone.kv_merge.config import KVMergeConfig

REPORT_FILE = "kv_merge_report.json"


class KVMerge(BackboneTransform):
    name = "kv_merge"
    config_cls = KVMergeConfig
    export_format = "llama_fewer_kv"

    def label(self, settings: dict[str, Any]) -> str:
        return f"kv_merge({settings.get('kv_heads')} kv heads)"

    def apply(self, model: torch.nn.Module, calib: Any, cfg: KVMergeConfig,
              progress: bool = False, record: Any = None, moments: Any = None) -> torch.nn.Module:
        """The model with cfg.kv_heads KV heads, merged on the calibration token batches `calib`
        (LongTensor (n, T)); the report rides along as `model.kv_merge_report`."""
        from rearqa.reader.backbone.kv_merge.convert import convert

        if calib is None:
            raise ConfigError("kv_merge fits its merge to calibration text (token batches); none was given")
        merged, report = convert(model, calib, cfg, record=record, moments=moments)
        merged.kv_merge_report = report
        return merged

    def kv_bytes_per_token(self, config: Any, dtype: torch.dtype | str) -> int:
        return dense_kv_bytes_per_token(config, dtype)  # a plain GQA cache, just fewer heads

    def save_weights(self, model: torch.nn.Module, out_dir: Path, cfg: KVMergeConfig) -> None:
        model.save_pretrained(out_dir)
        report = getattr(model, "kv_merge_report", None)
        if report is not None:
            atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")

    def load(self, model_dir: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        kwargs = {"dtype": dtype} if dtype is not None else {}
        return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
