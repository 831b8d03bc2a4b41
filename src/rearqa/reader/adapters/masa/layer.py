"""MASA's layer: the update of layer l's projection of type p mixes atoms shared by all layers.

    h = W0_l x + s * (sum_s c_{l,s} D^p_s) x              s = alpha / r
    c_l (S,)             -- lora_masa_coef, this layer's own coefficients
    D^p (S, d_out, d_in) -- lora_masa_atoms, held by the first layer of type p ("the owner")

The delta is a weight, so it merges and unmerges exactly (fp64, as every method here); it is a
full-rank matrix in general, so it exports to plain LoRA only by a truncated SVD, with the error
recorded (`rearqa.reader.adapters.export`).

Sharing inside PEFT. PEFT builds one layer per target and saves tensors by module path, so a
tensor registered in all L layers would be saved L times (PEFT clones aliased tensors for
safetensors) and loaded into L copies that no longer share. Here the atoms are registered once,
in the owner; every other layer of the group keeps the owner in a plain dict (`_masa_owner`, no
submodule, so neither state_dict nor named_parameters sees it twice) and reads the owner's
ParameterDict at each use, so a device move, a dtype cast or a load that replaces the tensor is
seen by all. The optimizer gets one atom tensor whose gradient sums over the layers. Owners are
found while PEFT builds the layers: the config carries a registry (`MasaLoraConfig.owners`) that
lives for one build (released by `RearLoraConfig.injected`); the build order is the model's
module order, so a reload makes the same layer the owner and the saved keys match.

MASA has no lora_A / lora_B: PEFT's update_layer builds them (its bookkeeping needs r, dropout
and scaling) and `add_method_tensors` removes them again, so nothing dead is trained or saved.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rearqa.reader.adapters.custom import RearLoraLinear

RANDOM_ATOM_STD = 0.02  # init "random": atom entries ~ N(0, this) (tests; starts away from the base)


class MasaLinear(RearLoraLinear):
    method_name = "masa"
    method_containers = {"lora_masa_coef": nn.ParameterDict, "lora_masa_atoms": nn.ParameterDict}
    exports_exactly = False

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config, **kwargs) -> None:
        self._masa_target = kwargs.get("target_name") or ""  # e.g. model.layers.3.self_attn.q_proj
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    def add_method_tensors(self, adapter: str, config) -> None:
        if not hasattr(self, "_masa_owner"):
            self._masa_owner: dict[str, MasaLinear] = {}
        del self.lora_A[adapter], self.lora_B[adapter]  # MASA's update is the atoms' (docstring)
        atoms = config.masa_atoms
        # c ~ N(0, 1/S): with zero atoms the first steps give layer l the sum over layers l' of
        # (c_l . c_l') times l''s gradient, about its own gradient plus a mixture of the others.
        self.lora_masa_coef[adapter] = nn.Parameter(torch.randn(atoms) / math.sqrt(atoms))
        leaf = self._masa_target.rsplit(".", 1)[-1]
        group = (adapter, leaf, self.out_features, self.in_features)
        owner = config.owners(group)
        if owner is None:
            shape = (atoms, self.out_features, self.in_features)
            init = torch.randn(shape) * RANDOM_ATOM_STD if config.masa_init == "random" else torch.zeros(shape)
            self.lora_masa_atoms[adapter] = nn.Parameter(init)
            config.owners(group, self)
            owner = self
        self._masa_owner[adapter] = owner

    def holds(self, adapter: str) -> bool:
        return adapter in self.lora_masa_coef

    def adapter_dtype(self, adapter: str) -> torch.dtype:
        return self.lora_masa_coef[adapter].dtype

    def atoms(self, adapter: str) -> torch.Tensor:
        """(S, d_out, d_in): the atoms this layer's group shares (the owner's tensor)."""
        return self._masa_owner[adapter].lora_masa_atoms[adapter]

    def owns_atoms(self, adapter: str) -> bool:
        return self._masa_owner[adapter] is self

    def _mixed(self, adapter: str, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
        coef = self.lora_masa_coef[adapter].to(dtype) * scale  # the scaling on S numbers
        return torch.einsum("s,soi->oi", coef, self.atoms(adapter).to(dtype))  # (d_out, d_in)

    def adapter_output(self, adapter: str, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        # Forming the (d_out, d_in) mix once costs S d_out d_in, less than S matmuls over the tokens;
        # the scaling rides on the coefficients, not on the (tokens, d_out) output.
        delta = self._mixed(adapter, x.dtype, self.scaling[adapter])
        return F.linear(self.lora_dropout[adapter](x), delta)

    def delta_weight(self, adapter: str, w0: torch.Tensor) -> torch.Tensor:
        return self._mixed(adapter, w0.dtype, self.scaling[adapter])

    def lora_factors(self, adapter: str, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("MASA's delta has no low-rank factors of its own; "
                                  "export_lora takes a truncated SVD of it")
