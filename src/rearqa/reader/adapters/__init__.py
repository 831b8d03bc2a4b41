"""Adapters: the LoRA family, each method a PEFT layer in its own folder, registered once.

`ADAPTERS` (config.py) maps a method's name to its `AdapterMethod` (base.py): a typed config and
`wrap(model, settings, trainable_token_indices)`, which puts the adapter on every linear layer of
a transformers causal LM but the output layer and returns the PEFT model. A method whose layer is
not PEFT's own keeps it in `<method>/layer.py` (forward, merge, unmerge, delta weight) and says
whether it exports to plain LoRA A/B matrices for vLLM (`exports_to_lora`).

Registered: `lora` (plain LoRA: PEFT's own layer, the recipe REAR and the baselines train with).
"""
from rearqa.reader.adapters.config import ADAPTERS, AdapterSettings

__all__ = ["ADAPTERS", "AdapterSettings", "get_adapter", "wrap"]


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
