"""Block-LoRA's layer: one shared down-projection ("one head"), n summed up-projection blocks.

    plain LoRA, its rank r split into n blocks of r / n:   B A = B_1 A_1 + ... + B_n A_n
    Block-LoRA shares every down-projection block A_i = A_s, so
    h = W0 x + s (B_1 + ... + B_n) (A_s x)                    s = alpha / r
    A_s (r/n, d_in): PEFT's lora_A, made r/n rows instead of r
    B = [B_1, ..., B_n] (d_out, r): PEFT's lora_B; B_i is its i-th block of r/n columns

The n products B_i (A_s x) become one product with the sum of the B_i: the matrix addition. The
update is the weight delta = s (B_1 + ... + B_n) A_s, which does not read W0: it merges exactly,
unmerging subtracts it, and it is plain LoRA of rank r / n with A = s A_s, B = B_1 + ... + B_n.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rearqa.reader.adapters.custom import RearLoraLinear

RANDOM_B_STD = 0.02  # init "random": B entries ~ N(0, this) (tests, and starts away from the base)


class BlockLoraLinear(RearLoraLinear):
    method_name = "blocklora"

    def add_method_tensors(self, adapter: str, config) -> None:
        if not hasattr(self, "up_blocks"):
            self.up_blocks: dict[str, int] = {}
        r, n = self.r[adapter], config.blocklora_blocks
        if r % n:  # BlockLoraSettings checks this; a rank_pattern entry would bypass it
            raise ValueError(f"blocklora: blocks={n} does not divide this layer's rank r={r}")
        self.up_blocks[adapter] = n
        shared = nn.Linear(self.in_features, r // n, bias=False)  # A_s replaces PEFT's (r, d_in) lora_A
        nn.init.kaiming_uniform_(shared.weight, a=math.sqrt(5))  # PEFT's own init of lora_A
        self.lora_A[adapter] = shared
        if config.blocklora_init == "random":
            nn.init.normal_(self.lora_B[adapter].weight, std=RANDOM_B_STD)

    def summed_up_projection(self, adapter: str, dtype: torch.dtype) -> torch.Tensor:
        """B_1 + ... + B_n, (d_out, r/n), summed in `dtype`."""
        b = self.lora_B[adapter].weight.to(dtype)  # (d_out, r)
        return b.view(b.shape[0], self.up_blocks[adapter], -1).sum(dim=1)  # (d_out, n, r/n) -> (d_out, r/n)

    def adapter_output(self, adapter: str, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        shared = self.lora_A[adapter](self.lora_dropout[adapter](x))  # (..., r/n): A_s x, once for all blocks
        return F.linear(shared, self.summed_up_projection(adapter, shared.dtype)) * self.scaling[adapter]

    def lora_factors(self, adapter: str, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.scaling[adapter] * self.lora_A[adapter].weight.to(w0.dtype)  # (r/n, d_in)
        return a, self.summed_up_projection(adapter, w0.dtype)  # B: (d_out, r/n)

    def delta_weight(self, adapter: str, w0: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_factors(adapter, w0)
        return b @ a
