"""Backbone transforms: attention upgrades that make the reader's backbone cheaper.

Each method lives in its own folder here (`reader/backbone/<method>/`: weight surgery, attention
modules, export), registered by name in `TRANSFORMS` (config.py) and built on the contract of
base.py. A converted reader is saved with a `backbone.json` (manifest.py) beside its weights, and
`load_causal_lm` (loading.py) reads it, so a converted reader loads by path like any other.
Whatever trains a transform (distillation, healing, pruning schedules) lives in `training/` and
calls the transform; this package never imports training.

Registered: `transmla` and `xecomla` (GQA to multi-head latent attention), `kv_merge` (fewer KV
heads, a stock Llama) and `loraprune` (structured pruning of KV groups and MLP channels to a
saved mask, a stock Llama out); `tpla/` is not a transform but a decode mode of their MLA module
(the latent split across processes). SpAtten fills the same seam next (docs/architecture.md says
how to add one).
"""
from rearqa.reader.backbone.config import BACKBONE_FILE, EXPORT_FORMATS, TRANSFORMS, TransformConfig
from rearqa.reader.backbone.manifest import BackboneManifest, read_manifest, write_manifest

__all__ = ["BACKBONE_FILE", "EXPORT_FORMATS", "TRANSFORMS", "BackboneManifest", "TransformConfig",
           "get_transform", "read_manifest", "write_manifest"]


def get_transform(name: str):
    """The transform registered as `name` (an instance of its class); unknown names list the valid."""
    from rearqa.config_errors import ConfigError
    from rearqa.registry import resolve

    return resolve(TRANSFORMS, name, "backbone transform", ConfigError)()
