"""Adapters: the LoRA family, each method a PEFT layer in its own folder, registered once.

`ADAPTERS` (config.py) maps a method's name to its `AdapterMethod` (base.py): a typed config and
`wrap(model, settings, trainable_token_indices)`, which puts the adapter on every linear layer of
a transformers causal LM but the output layer and returns the PEFT model. A method whose layer is
not PEFT's own keeps it in `<method>/layer.py` (forward, merge, unmerge, delta weight) and says
whether it exports to plain LoRA A/B matrices for vLLM (`exports_to_lora`).

Registered: `lora` (plain LoRA: PEFT's own layer, the recipe REAR and the baselines train with),
`hydra` (parallel + sequential branch), `dvlora` (DV-LoRA / GDV-LoRA, the `gate` setting),
`blocklora` (Block-LoRA: n up-projection blocks sharing one down-projection),
and `masa` (matrix atoms shared across layers; exports to plain LoRA only by a truncated SVD).
A method with its own layer saves its settings in adapter_config.json (`rearqa_method`); load every
adapter with `load_adapter`, which registers the layer again (PEFT does not save that), and export
one for vLLM with `rearqa.reader.adapters.export.export_lora`.
"""
from rearqa.reader.adapters.config import ADAPTERS, AdapterSettings, saved_adapter_config

__all__ = ["ADAPTERS", "AdapterSettings", "check_targets", "get_adapter", "linear_names",
           "load_adapter", "wrap"]


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
    check_targets(model, settings.target)
    return method.wrap(model, settings, trainable_token_indices)


def linear_names(model) -> list[str]:
    """The names (last dotted part) of `model`'s linear layers but its output layer: what an
    adapter's target list may name."""
    return sorted({name.rsplit(".", 1)[-1] for name in _linear_modules(model)})


def _linear_modules(model) -> list[str]:
    from torch import nn

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not output]


def check_targets(model, target: str | list[str]) -> None:
    """Refuse a target the model does not have, naming the ones it has. PEFT matches a list entry
    as the end of a module name and only complains when nothing matches, so one misspelt name
    among correct ones would otherwise leave that layer untrained without a word."""
    import re

    from rearqa.config_errors import ConfigError

    if target == "all-linear":
        return
    have = linear_names(model)
    if isinstance(target, str):  # PEFT reads a single string as a regex over full module names
        if not any(re.fullmatch(target, name) for name, _ in model.named_modules()):
            raise ConfigError(f"adapter target {target!r} matches no module of "
                              f"{type(model).__name__}; its linear layers are {have}")
        return
    full = _linear_modules(model)  # an entry names a module's last part(s), as PEFT matches them
    missing = [t for t in target if not any(n == t or n.endswith("." + t) for n in full)]
    if missing:
        raise ConfigError(f"adapter target {missing} not in {type(model).__name__}: its linear "
                          f"layers (but the output layer) are {have}; or use all-linear")


def load_adapter(model, adapter_dir, is_trainable: bool = False):
    """The PeftModel of `model` with the saved adapter in `adapter_dir`, whichever method trained
    it: adapter_config.json's `rearqa_method` names it (absent: plain LoRA), and that method's
    config, rebuilt from the file, registers its layer before PEFT builds the model."""
    from peft import PeftModel

    from rearqa.reader.adapters.custom import METHOD_KEY
    from rearqa.reader.adapters.peft_compat import dense_targets

    saved = saved_adapter_config(adapter_dir)
    name = saved.get(METHOD_KEY) or "lora"
    method = get_adapter(name)
    config = method.peft_config_cls.from_saved(saved) if hasattr(method, "peft_config_cls") else None
    with dense_targets(model):
        peft_model = PeftModel.from_pretrained(model, adapter_dir, config=config, is_trainable=is_trainable)
    if config is not None:
        config.injected()
    return peft_model
