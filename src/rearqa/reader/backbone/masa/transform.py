"""MASA as a registered backbone transform (the contract of reader/backbone/base.py).

`apply` rebuilds the chosen projections from cfg.atoms shared atoms each (convert.py; weight only,
no calibration text). The result is a model of the source's own class and shapes, saved with
save_pretrained as `llama_rebuilt` (stock transformers and vLLM load it: served rebuilt), with
the compact form beside it: masa_dictionary.safetensors (per projection type its atoms
(S, d_out, d_in) and coefficients (L, S), in the saved dtype) and masa_report.json (energy kept,
each layer's relative weight error, and the parameters and bytes the compact form saves).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rearqa.files import atomic_write_text
from rearqa.reader.backbone.base import BackboneTransform, dense_kv_bytes_per_token, dtype_bytes
from rearqa.reader.backbone.masa.config import ATTENTION_PROJECTIONS, MasaConfig

DICTIONARY_FILE = "masa_dictionary.safetensors"
REPORT_FILE = "masa_report.json"


class Masa(BackboneTransform):
    name = "masa"
    config_cls = MasaConfig
    export_format = "llama_rebuilt"

    def label(self, settings: dict[str, Any]) -> str:
        projections = settings.get("projections") or list(ATTENTION_PROJECTIONS)
        where = "" if list(projections) == list(ATTENTION_PROJECTIONS) else f" on {'+'.join(projections)}"
        return f"masa({settings.get('atoms')} atoms{where})"

    def apply(self, model: torch.nn.Module, calib: Any, cfg: MasaConfig, progress: bool = False,
              decompositions: Any = None) -> torch.nn.Module:
        """A copy of `model` with its projections rebuilt from shared atoms (`calib` is unused:
        the fit is to the weights); the dictionary and report ride along as `model.masa_dictionary`
        and `model.masa_report`."""
        from rearqa.reader.backbone.masa.convert import convert

        rebuilt, tensors, report = convert(model, cfg, decompositions)
        rebuilt.masa_dictionary = tensors
        rebuilt.masa_report = report
        return rebuilt

    def kv_bytes_per_token(self, config: Any, dtype: torch.dtype | str) -> int:
        return dense_kv_bytes_per_token(config, dtype)  # the cache is the source's

    def save_weights(self, model: torch.nn.Module, out_dir: Path, cfg: MasaConfig) -> None:
        from safetensors.torch import save_file

        model.save_pretrained(out_dir)
        tensors = getattr(model, "masa_dictionary", None)
        if tensors is None:
            return
        dtype = next(model.parameters()).dtype
        save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, out_dir / DICTIONARY_FILE,
                  metadata={"format": "pt"})
        report = dict(model.masa_report)
        per_value = dtype_bytes(dtype)
        params = report["params"]
        report["bytes"] = {"dtype": str(dtype).removeprefix("torch."),
                           **{k: params[k] * per_value for k in ("shared_original", "shared_compact",
                                                                 "model_original", "model_compact")}}
        atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")

    def load(self, model_dir: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        kwargs = {"dtype": dtype} if dtype is not None else {}
        return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
