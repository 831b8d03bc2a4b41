"""The machinery every LoRA-family method with its own layer shares (hydra, dvlora, blocklora).

A method is a PEFT LoRA custom module: `RearLoraConfig` (a `LoraConfig` subclass) carries the
method's own settings as dataclass fields, so they are saved in `adapter_config.json` with the
marker `rearqa_method`, and registers the method's layer for `nn.Linear` in `__post_init__`.
PEFT does not save that registration (`_custom_modules` is no field): building the config again
from the saved JSON (`load_adapter`) registers it again, so a saved adapter reloads in a fresh
process. Plain PEFT loading such a directory would drop the method's own tensors with a warning,
which is why the project loads every adapter through `rearqa.reader.adapters.load_adapter`.

`RearLoraLinear` (a `peft.tuners.lora.layer.Linear` subclass) owns forward, merge and unmerge; a
method supplies the adapter's output, its weight delta (which may read the base weight W0), and
the plain-LoRA factors `(A, B)` with B A equal to that delta (export). It overrides
`get_delta_weight`: PEFT's own `lora.Linear.get_delta_weight` reads only lora_A / lora_B and so
would silently drop the method's other tensors in `peft.convert_to_lora` or any merge.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn

METHOD_KEY = "rearqa_method"  # adapter_config.json key naming the method (absent: plain LoRA)


@dataclass
class RearLoraConfig(LoraConfig):
    """A LoraConfig that carries a rearqa method's settings and registers its layer."""

    rearqa_method: str = field(default="", metadata={"help": "the rearqa adapter method"})
    layer_cls: ClassVar[type]  # each subclass: its method's RearLoraLinear

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fan_in_fan_out:
            raise ValueError(f"{self.rearqa_method}: fan_in_fan_out (GPT-2 Conv1D) is not supported")
        if self.lora_bias or self.use_dora:
            raise ValueError(f"{self.rearqa_method}: lora_bias and use_dora are not supported")
        self._register_custom_module({nn.Linear: type(self).layer_cls})

    def injected(self) -> None:
        """Called once PEFT has built every layer of this config (`wrap_with`, `load_adapter`): a
        method whose layers shared state while they were built (masa's atoms) lets go of it."""

    @classmethod
    def from_saved(cls, saved: dict) -> "RearLoraConfig":
        """The config rebuilt from a saved adapter_config.json (so the layer is registered again)."""
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in saved.items() if k in names})


class RearLoraLinear(LoraLinear):
    """A PEFT LoRA layer whose update is the method's own (see the module docstring).

    A subclass names its per-adapter containers in `method_containers` (each name must start with
    "lora_": PEFT marks, saves and moves adapter tensors by these names), fills them in
    `add_method_tensors`, and implements `adapter_output`, `delta_weight` and `lora_factors`.
    """

    method_name: ClassVar[str] = "rearqa"  # the registered method (repr, errors)
    method_containers: ClassVar[dict[str, type]] = {}  # name -> nn.ModuleDict or nn.ParameterDict
    # True: `lora_factors` gives B A equal to the delta (export is exact). False: the delta has no
    # low-rank form of its own and export takes a truncated SVD of it, with the error recorded.
    exports_exactly: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.adapter_layer_names = LoraLinear.adapter_layer_names + tuple(cls.method_containers)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: LoraConfig, **kwargs) -> None:
        for name, container in self.method_containers.items():
            if name not in self._modules:
                setattr(self, name, container())
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        self.add_method_tensors(adapter_name, config)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    # --- what a method supplies -------------------------------------------------------------
    def add_method_tensors(self, adapter: str, config: LoraConfig) -> None:
        raise NotImplementedError

    def adapter_output(self, adapter: str, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        """The adapter's addition to the layer output; `base_out` is W0 x (+ bias)."""
        raise NotImplementedError

    def delta_weight(self, adapter: str, w0: torch.Tensor) -> torch.Tensor:
        """The (d_out, d_in) weight update for base weight `w0`, in w0's dtype."""
        raise NotImplementedError

    def lora_factors(self, adapter: str, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (R, d_in), B (d_out, R)) with B @ A == delta_weight(adapter, w0), scaling folded in."""
        raise NotImplementedError

    def holds(self, adapter: str) -> bool:
        """Whether this layer carries `adapter` (a method without lora_A / lora_B overrides it)."""
        return adapter in self.lora_A

    def adapter_dtype(self, adapter: str) -> torch.dtype:
        """The dtype the adapter computes in (the layer input is cast to it)."""
        return self.lora_A[adapter].weight.dtype

    def export_refusal(self, adapter: str) -> str | None:
        """Why this adapter cannot merge or export as plain LoRA (None: it can)."""
        return None

    def unmerged_weight(self, adapter: str, merged: torch.Tensor) -> torch.Tensor:
        """W0 from W0 + delta (a method whose delta reads W0 overrides this)."""
        return merged - self.delta_weight(adapter, merged)

    # --- the shared mechanics ---------------------------------------------------------------
    def _refuse(self, adapter: str, what: str) -> None:
        reason = self.export_refusal(adapter)
        if reason is not None:
            raise ValueError(f"cannot {what} adapter {adapter!r}: {reason}")

    def base_weight(self, adapter: str) -> torch.Tensor:
        """W0 as this adapter sees it (fp32 at least); refused while any adapter is merged."""
        if self.merged:
            raise ValueError(f"adapter {adapter!r}: unmerge before asking for its delta weight "
                             f"(merged: {self.merged_adapters})")
        w = self.get_base_layer().weight
        return w.float() if w.dtype in (torch.float16, torch.bfloat16) else w

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        self._refuse(adapter, "compute a delta weight for")
        weight = self.get_base_layer().weight
        return self.delta_weight(adapter, self.base_weight(adapter)).to(weight.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        for adapter in check_adapters_to_merge(self, adapter_names):
            if not self.holds(adapter):
                continue
            self._refuse(adapter, "merge")
            weight = self.get_base_layer().weight
            w = weight.data.double()  # fp64 so a merge-unmerge round trip is exact to fp32 round-off
            merged = w + self.delta_weight(adapter, w)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"NaNs or infs in the merged weight of adapter {adapter!r}")
            weight.data = merged.to(weight.dtype)
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            if self.holds(adapter):
                weight = self.get_base_layer().weight
                weight.data = self.unmerged_weight(adapter, weight.data.double()).to(weight.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        if kwargs.pop("adapter_names", None) is not None:
            raise NotImplementedError("mixed-adapter batches are not supported by rearqa's LoRA methods")
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        base_out = self.base_layer(x, *args, **kwargs)
        result = base_out
        for adapter in self.active_adapters:
            if self.holds(adapter):
                xa = self._cast_input_dtype(x, self.adapter_dtype(adapter))
                result = result + self.adapter_output(adapter, xa, base_out).to(result.dtype)
        return result

    def __repr__(self) -> str:
        return f"{self.method_name}." + super().__repr__()


def base_output_without_bias(layer: nn.Module, base_out: torch.Tensor) -> torch.Tensor:
    """W0 x from the base layer's output W0 x + b."""
    bias = getattr(layer, "bias", None)
    return base_out if bias is None else base_out - bias


def check_all_wrapped(peft_model: nn.Module, layer_cls: type) -> None:
    """Every LoRA layer PEFT built is the method's own: a target that is not an nn.Linear (e.g.
    GPT-2's Conv1D) would otherwise fall back to plain LoRA without a word."""
    from peft.tuners.lora.layer import LoraLayer

    other = [name for name, m in peft_model.named_modules()
             if isinstance(m, LoraLayer) and not isinstance(m, layer_cls)]
    if other:
        raise ValueError(f"{layer_cls.method_name} supports nn.Linear targets only; these got plain "
                         f"LoRA instead: {other[:5]}{' ...' if len(other) > 5 else ''}")


def wrap_with(config: RearLoraConfig, model: nn.Module) -> nn.Module:
    """`model` wrapped by PEFT with `config` (the method's registered layer on every target)."""
    from peft import get_peft_model

    from rearqa.reader.adapters.peft_compat import dense_targets

    with dense_targets(model):
        peft_model = get_peft_model(model, config)
    config.injected()
    check_all_wrapped(peft_model, config.layer_cls)
    return peft_model


class CustomMethod:
    """What a method with its own layer registers (hydra, dvlora, blocklora): `peft_config_cls` (its
    RearLoraConfig) and `method_fields(settings)`, the config fields beyond plain LoRA's."""

    peft_config_cls: ClassVar[type[RearLoraConfig]]
    exports_to_lora: ClassVar[bool] = True

    @staticmethod
    def method_fields(settings) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def saved_export_refusal(saved: dict) -> str | None:
        """Why the adapter saved with config `saved` (its adapter_config.json) cannot export as
        plain LoRA, read from the file alone, before any model is loaded (None: it can). The
        layer's `export_refusal` says the same once the adapter is loaded."""
        return None

    @classmethod
    def wrap(cls, model: nn.Module, settings, trainable_token_indices: dict[str, list[int]] | None = None
             ) -> nn.Module:
        extra = {"trainable_token_indices": trainable_token_indices} if trainable_token_indices else {}
        config = cls.peft_config_cls(r=settings.r, lora_alpha=settings.alpha,
                                     lora_dropout=settings.dropout, target_modules=settings.target,
                                     task_type="CAUSAL_LM", **cls.method_fields(settings), **extra)
        return wrap_with(config, model)
