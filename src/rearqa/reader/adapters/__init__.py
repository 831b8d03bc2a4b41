"""Adapters: the LoRA family, each method a PEFT layer in its own folder, registered once.

`ADAPTERS` (config.py) maps a method's name to its `AdapterMethod` (base.py): a typed config and
`wrap(model, settings, trainable_token_indices)`, which puts the adapter on every linear layer of
a transformers causal LM but the output layer and returns the PEFT model. A method whose layer is
not PEFT's own keeps it in `<method>/layer.py` (forward, merge, unmerge, delta weight) and says
whether it exports to plain LoRA A/B matrices for vLLM (`exports_to_lora`).

Registered: `lora` (plain LoRA: PEFT's own layer, the recipe REAR and the baselines train with),
`hydra` (parallel + sequential branch), `dvlora` (DV-LoRA / GDV-LoRA, the `gate` setting) and
`masa` (matrix atoms shared across layers; exports to plain LoRA only by a truncated SVD).
A method with its own layer saves its settings in adapter_config.json (`rearqa_method`); load every
adapter with `load_adapter`, which registers the layer again (PEFT does not save that), and export
one for vLLM with `rearqa.reader.adapters.export.export_lora`.
"""
from rearqa.reader.adapters.config import ADAPTERS, AdapterSettings

__all__ = ["ADAPTERS", "AdapterSettings", "get_adapter", "load_adapter", "wrap"]


def get_adapter(name: str):
    """The adapter method registered as `name`; an unknown name lists the valid ones."""
    from rearqa.config_errors import ConfigError
    from rearqa.registry import resolve

    return resolve(ADAPTERS, name, "adapter method", ConfigError)


def wrap(name: str, model, settings: AdapterSettings | None = None,
         trainable_token_indices: dict[str, list[int]] | None = None):
    """`model` wrapped with adapter `name` (default settings of that method when none are given)."""
    method = get_adapter(name)
    settings = settings if settings is not None else method.config_cls()
    if not isinstance(settings, method.config_cls):
        raise TypeError(f"adapter {name!r} takes {method.config_cls.__name__}, "
                        f"not {type(settings).__name__}")
    return method.wrap(model, settings, trainable_token_indices)


def load_adapter(model, adapter_dir, is_trainable: bool = False):
    """The PeftModel of `model` with the saved adapter in `adapter_dir`, whichever method trained
    it: adapter_config.json's `rearqa_method` names it (absent: plain LoRA), and that method's
    config, rebuilt from the file, registers its layer before PEFT builds the model."""
    import json
    from pathlib import Path

    from peft import PeftModel

    from rearqa.reader.adapters.custom import METHOD_KEY
    from rearqa.reader.adapters.peft_compat import dense_targets

    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{adapter_dir} has no adapter_config.json; give the directory "
                                "peft's save_pretrained wrote")
    saved = json.loads(config_file.read_text())
    name = saved.get(METHOD_KEY) or "lora"
    method = get_adapter(name)
    config = method.peft_config_cls.from_saved(saved) if hasattr(method, "peft_config_cls") else None
    with dense_targets(model):
        peft_model = PeftModel.from_pretrained(model, adapter_dir, config=config, is_trainable=is_trainable)
    if config is not None:
        config.injected()
    return peft_model
