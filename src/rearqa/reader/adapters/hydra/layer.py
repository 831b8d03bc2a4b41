"""Hydra's layer: a parallel LoRA branch on the input plus a sequential one on the base output.

    h = W0 x + s_p B_p A_p x + s_s B_s A_s (W0 x)          s_p = alpha / r, s_s = alpha_s / r_s
    A_p (r, d_in), B_p (d_out, r)  -- PEFT's own lora_A / lora_B
    A_s (r_s, d_out), B_s (d_out, r_s)  -- lora_seq_A / lora_seq_B

The sequential branch reads W0 x without the base bias, so the update is a weight:
    delta = s_p B_p A_p + s_s B_s (A_s W0)
which merges exactly and is plain LoRA of rank r + r_s with A = [s_p A_p; s_s A_s W0],
B = [B_p, B_s]. Unmerging inverts (I + s_s B_s A_s) through the Woodbury identity, an r_s x r_s
solve: W' = (I + s_s B_s A_s) W0 + s_p B_p A_p, so W0 = M - s_s B_s (I + s_s A_s B_s)^-1 A_s M
with M = W' - s_p B_p A_p (needs I + s_s A_s B_s invertible, true unless the sequential branch
maps some output direction to exactly minus itself).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rearqa.reader.adapters.custom import RearLoraLinear, base_output_without_bias

RANDOM_B_STD = 0.02  # init "random": B entries ~ N(0, this) (tests, and starts away from the base)


class HydraLinear(RearLoraLinear):
    method_name = "hydra"
    method_containers = {"lora_seq_A": nn.ModuleDict, "lora_seq_B": nn.ModuleDict}

    def add_method_tensors(self, adapter: str, config) -> None:
        if not hasattr(self, "seq_scaling"):
            self.seq_scaling: dict[str, float] = {}
        r_s = config.hydra_sequential_r
        self.lora_seq_A[adapter] = nn.Linear(self.out_features, r_s, bias=False)
        self.lora_seq_B[adapter] = nn.Linear(r_s, self.out_features, bias=False)
        self.seq_scaling[adapter] = config.hydra_sequential_alpha / r_s
        nn.init.kaiming_uniform_(self.lora_seq_A[adapter].weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_seq_B[adapter].weight)
        if config.hydra_init == "random":
            nn.init.normal_(self.lora_B[adapter].weight, std=RANDOM_B_STD)
            nn.init.normal_(self.lora_seq_B[adapter].weight, std=RANDOM_B_STD)

    def adapter_output(self, adapter: str, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        # Both branches go through one up-projection [s_p B_p, s_s B_s] of their stacked low-rank
        # activations: one (tokens, d_out) product and no pass over it to scale or add.
        dropout = self.lora_dropout[adapter]
        low_p = self.lora_A[adapter](dropout(x))  # (..., r)
        w0x = base_output_without_bias(self.get_base_layer(), base_out).to(x.dtype)  # (..., d_out)
        low_s = self.lora_seq_A[adapter](dropout(w0x))  # (..., r_s)
        up = torch.cat([self.lora_B[adapter].weight * self.scaling[adapter],
                        self.lora_seq_B[adapter].weight * self.seq_scaling[adapter]], dim=1)
        return F.linear(torch.cat([low_p, low_s], dim=-1), up)

    def _weights(self, adapter: str, dtype: torch.dtype):
        return (self.lora_A[adapter].weight.to(dtype), self.lora_B[adapter].weight.to(dtype),
                self.lora_seq_A[adapter].weight.to(dtype), self.lora_seq_B[adapter].weight.to(dtype))

    def delta_weight(self, adapter: str, w0: torch.Tensor) -> torch.Tensor:
        a_p, b_p, a_s, b_s = self._weights(adapter, w0.dtype)
        return self.scaling[adapter] * (b_p @ a_p) + self.seq_scaling[adapter] * (b_s @ (a_s @ w0))

    def lora_factors(self, adapter: str, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_p, b_p, a_s, b_s = self._weights(adapter, w0.dtype)
        a = torch.cat([self.scaling[adapter] * a_p, self.seq_scaling[adapter] * (a_s @ w0)])  # (r + r_s, d_in)
        return a, torch.cat([b_p, b_s], dim=1)  # B: (d_out, r + r_s)

    def unmerged_weight(self, adapter: str, merged: torch.Tensor) -> torch.Tensor:
        a_p, b_p, a_s, b_s = self._weights(adapter, merged.dtype)
        s_s = self.seq_scaling[adapter]
        m = merged - self.scaling[adapter] * (b_p @ a_p)
        eye = torch.eye(a_s.shape[0], dtype=merged.dtype, device=merged.device)
        inner = torch.linalg.solve(eye + s_s * (a_s @ b_s), a_s @ m)  # (r_s, d_in)
        return m - s_s * (b_s @ inner)
