"""SpAtten as an inference-time backbone: parse its budget string, install it, name it.
Torch-free at import, so ReaderConfig can check a budget string where it enters."""
from __future__ import annotations

from rearqa.reader.backbone.spatten.config import SpAttenConfig, parse_budgets


class SpAtten:
    """The `spatten` entry of INFERENCE_BACKBONES."""

    name = "spatten"
    config_cls = SpAttenConfig

    def parse(self, text: str) -> SpAttenConfig:
        return parse_budgets(text)

    def apply(self, model, cfg: SpAttenConfig):
        """`model` running SpAtten attention at `cfg` (eager math; the weights untouched)."""
        from rearqa.reader.backbone.spatten.attention import install

        install(model, cfg)
        return model

    def label(self, cfg: SpAttenConfig) -> str:
        return cfg.label
