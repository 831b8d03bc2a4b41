"""The backbone wing's names, torch-free: the transform registry and what a transform can export.

`TRANSFORMS` maps a transform's name to the lazy "module:Class" path of its `BackboneTransform`
(base.py); `rearqa.registry.resolve` imports it on first use. A method registers itself here, once,
when its folder lands.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rearqa.config_errors import ConfigError

TRANSFORMS: dict[str, str] = {
    "transmla": "rearqa.reader.backbone.transmla.transform:TransMLA",
    "xecomla": "rearqa.reader.backbone.xecomla.transform:XEcoMLA",
    "loraprune": "rearqa.reader.backbone.loraprune.transform:LoRAPrune",
    "kv_merge": "rearqa.reader.backbone.kv_merge.transform:KVMerge",
    "masa": "rearqa.reader.backbone.masa.transform:Masa",
}

# Inference-time backbones: methods that change how a loaded reader attends, not its weights, with
# settings chosen per run (`reader.backbone: "spatten:tokens=0.6,..."`): nothing to convert or
# export, so not TRANSFORMS. Each class has parse(text) -> config, apply(model, config) -> model
# and label(config); the transformers engine applies one over whatever reader it loaded.
INFERENCE_BACKBONES: dict[str, str] = {
    "spatten": "rearqa.reader.backbone.spatten.transform:SpAtten",
}


def inference_backbone_name(text: str) -> str:
    """The method of a `name[:settings]` backbone string; an unknown one lists the valid names."""
    name = text.strip().partition(":")[0]
    if name not in INFERENCE_BACKBONES:
        raise ConfigError(f"backbone {text!r}: an inference-time backbone is one of "
                          f"{list(INFERENCE_BACKBONES)}, written name[:key=value,...] "
                          "(converted backbones load by path: reader.model)")
    return name

# What a converted reader can be saved as, and so which engines can serve it:
#   deepseek_v3_mla  a DeepseekV3 (MLA) checkpoint: transformers and vLLM's MLA backends
#   llama_fewer_kv   a stock Llama checkpoint with fewer num_key_value_heads: any engine
#   llama_pruned     a stock Llama checkpoint with pruned widths (fewer heads, a narrower MLP,
#                    the same in every layer): any engine
#   llama_rebuilt    a stock checkpoint of the source's own architecture and shapes whose weights
#                    were rebuilt from a compact form stored beside them (MASA's shared atoms):
#                    any engine that serves the source
#   hf_only          weights in a layout only this package's modules run (transformers engine)
EXPORT_FORMATS = ("deepseek_v3_mla", "llama_fewer_kv", "llama_pruned", "llama_rebuilt", "hf_only")
BACKBONE_FILE = "backbone.json"
# Formats a stock vLLM loads without this package's code.
VLLM_FORMATS = ("deepseek_v3_mla", "llama_fewer_kv", "llama_pruned", "llama_rebuilt")


@dataclass
class TransformConfig:
    """Settings every transform's typed config shares (each method subclasses it)."""

    seed: int = 0  # seeds any sampling the transform does (calibration subsets, random init)
    # settings that name a file (loraprune's mask): a recipe carries the file and resolves the
    # setting against its own directory (reader/backbone/recipe.py)
    file_settings: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"backbone.seed={self.seed!r}: must be an integer")
