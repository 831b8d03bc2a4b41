"""Backbone transforms: attention upgrades that make the reader's backbone cheaper.

Each method lives in its own folder here (`reader/backbone/<method>/`: weight surgery, attention
modules, export), registered by name in `TRANSFORMS` (config.py) and built on the contract of
base.py. A converted reader is saved with a `backbone.json` (manifest.py) beside its weights, and
`load_causal_lm` (loading.py) reads it, so a converted reader loads by path like any other.
Whatever trains a transform (distillation, healing, pruning schedules) lives in `training/` and
calls the transform; this package never imports training.

Registered: `transmla` and `xecomla` (GQA to multi-head latent attention), `kv_merge` (fewer KV
heads, a stock Llama), `loraprune` (structured pruning of KV groups and MLP channels to a
saved mask, a stock Llama out) and `masa` (projections rebuilt from atoms shared across layers:
a storage saving, served rebuilt); `tpla/` is not a transform but a decode mode of their MLA module
(the latent split across processes). docs/architecture.md says how to add one.

Inference-time backbones change how a loaded reader attends and take their settings per run
(`reader.backbone: "spatten:tokens=0.6,..."`); they register in `INFERENCE_BACKBONES` (config.py)
and `inference_backbone` parses one. Registered: `spatten` (cascade token and head pruning).
"""
from rearqa.reader.backbone.config import (BACKBONE_FILE, EXPORT_FORMATS, INFERENCE_BACKBONES, TRANSFORMS,
                                           TransformConfig, inference_backbone_name)
from rearqa.reader.backbone.manifest import BackboneManifest, read_manifest, write_manifest

__all__ = ["BACKBONE_FILE", "EXPORT_FORMATS", "INFERENCE_BACKBONES", "TRANSFORMS", "BackboneManifest", "TransformConfig",
           "get_transform", "inference_backbone", "read_manifest", "write_manifest"]


def get_transform(name: str):
    """The transform registered as `name` (an instance of its class); unknown names list the valid."""
    from rearqa.config_errors import ConfigError
    from rearqa.registry import resolve

    return resolve(TRANSFORMS, name, "backbone transform", ConfigError)()


def inference_backbone(text: str):
    """(the inference-time backbone `text` names, an instance; its parsed settings), for a string
    such as "spatten:tokens=0.6,heads=0.8"; an unknown name or a bad setting raises ConfigError."""
    from rearqa.config_errors import ConfigError
    from rearqa.registry import resolve

    method = resolve(INFERENCE_BACKBONES, inference_backbone_name(text), "inference-time backbone",
                     ConfigError)()
    return method, method.parse(text)
