"""The adapter wing's seam: the registry, the shared settings, plain LoRA's wrapping."""
from __future__ import annotations

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters import ADAPTERS, get_adapter, wrap
from rearqa.reader.adapters.config import AdapterSettings
from rearqa.reader.adapters.lora.config import LoraSettings
from rearqa.testing import tiny_llama


def test_registry_lists_the_methods():
    assert get_adapter("lora").name == "lora"
    with pytest.raises(ConfigError, match=r"unknown adapter method 'ia3'; valid methods are \['lora'"):
        get_adapter("ia3")
    for name in ADAPTERS:
        method = get_adapter(name)
        assert method.name == name and issubclass(method.config_cls, AdapterSettings)


@pytest.mark.parametrize("bad", [dict(r=0), dict(r=1.5), dict(alpha=0), dict(dropout=1.0),
                                 dict(target=[])])
def test_bad_settings_name_the_value(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        LoraSettings(**bad)


def test_lora_wraps_every_linear_layer_but_the_output_layer():
    model = tiny_llama(64, tied=False)
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    peft_model = wrap("lora", model, LoraSettings(r=2, alpha=4, dropout=0.0))
    wrapped = {name.removeprefix("base_model.model.") for name, m in peft_model.named_modules()
               if hasattr(m, "lora_A")}
    assert wrapped == linear - {"lm_head"}
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():  # B starts at zero: the wrapped model computes what the base did
        assert torch.equal(peft_model(ids).logits, tiny_llama(64, tied=False)(ids).logits)


def test_settings_of_another_type_are_refused():
    class Other(AdapterSettings):
        pass

    with pytest.raises(TypeError, match="takes LoraSettings"):
        wrap("lora", tiny_llama(64), Other())
