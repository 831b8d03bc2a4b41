"""Block-LoRA's layer: one shared down-projection ("one head"), n summed up-projection blocks.

    plain LoRA, its rank r split into n blocks of r / n:   B A = B_1 A_1 + ... + B_n A_n
    Block-LoRA shares every down-projection block A_i = A_s, so
    h = W0 x + s (B_1 + ... + B_n) (A_s x)                    s = alpha / r
    A_s (r/n, d_in): PEFT's lora_A, made r/n rows instead of r
    B = [B_1, ..., B_n] (d_out, r): PEFT's lora_B; B_i is its i-th block of r/n columns

The n products B_i (A_s x) become one product with the sum of the B_i: the matrix addition. The
update is the weight delta = s (B_1 + ... + B_n) A_s, which does not read W0: it merges exactly,
unmerging subtracts it, and it is plain LoRA of rank r / n with A = s A_s, B = B_1 + ... + B_n.

share "input", the other reading: A (r, d_in) split into n blocks of d_in / n columns, all A_s:
    A x = A_j x_j summed over j = A_s (x_1 + ... + x_n)        x_j: x's j-th d_in / n columns
    h = W0 x + s B A_s (x_1 + ... + x_n)
    A_s (r, d_in/n): PEFT's lora_A, made d_in/n columns wide;  B (d_out, r): PEFT's lora_B as it is
The addition is now of x's column chunks; the update s B [A_s, ..., A_s] keeps rank up to r and
exports exactly as plain LoRA of rank r with A = s [A_s, ..., A_s].
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
            self.shares: dict[str, str] = {}
        r, n = self.r[adapter], config.blocklora_blocks
        share = getattr(config, "blocklora_share", "rank")  # adapters saved before the setting: rank
        if share == "input":
            if self.in_features % n:  # the layer's width is not known to the settings
                divisors = [b for b in range(1, min(self.in_features, 64) + 1) if self.in_features % b == 0]
                raise ValueError(f"blocklora: blocks={n} does not divide this layer's input width "
                                 f"d_in={self.in_features} (share: input splits x into blocks of d_in / blocks "
                                 f"columns): use blocks in {divisors}")
            shared = nn.Linear(self.in_features // n, r, bias=False)  # A_s replaces PEFT's (r, d_in) lora_A
        else:
            if r % n:  # BlockLoraSettings checks this; a rank_pattern entry would bypass it
                raise ValueError(f"blocklora: blocks={n} does not divide this layer's rank r={r}")
            shared = nn.Linear(self.in_features, r // n, bias=False)  # A_s replaces PEFT's (r, d_in) lora_A
        self.up_blocks[adapter], self.shares[adapter] = n, share
        nn.init.kaiming_uniform_(shared.weight, a=math.sqrt(5))  # PEFT's own init of lora_A
        self.lora_A[adapter] = shared
        if config.blocklora_init == "random":
            nn.init.normal_(self.lora_B[adapter].weight, std=RANDOM_B_STD)

    def summed_up_projection(self, adapter: str, dtype: torch.dtype) -> torch.Tensor:
        """share rank: B_1 + ... + B_n, (d_out, r/n), summed in `dtype`; share input: B itself."""
        b = self.lora_B[adapter].weight.to(dtype)  # (d_out, r)
        if self.shares[adapter] == "input":
            return b
        return b.view(b.shape[0], self.up_blocks[adapter], -1).sum(dim=1)  # (d_out, n, r/n) -> (d_out, r/n)

    def adapter_output(self, adapter: str, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        x = self.lora_dropout[adapter](x)
        if self.shares[adapter] == "input":  # x_1 + ... + x_n, the input's column chunks summed
            x = x.reshape(*x.shape[:-1], self.up_blocks[adapter], -1).sum(dim=-2)
        shared = self.lora_A[adapter](x)  # (..., r/n) or (..., r): A_s, once for all blocks
        # The scaling goes on B's (d_out, r) entries, not on the (tokens, d_out) output.
        return F.linear(shared, self.summed_up_projection(adapter, shared.dtype) * self.scaling[adapter])

    def lora_factors(self, adapter: str, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.scaling[adapter] * self.lora_A[adapter].weight.to(w0.dtype)  # (r/n, d_in) or (r, d_in/n)
        if self.shares[adapter] == "input":
            a = a.repeat(1, self.up_blocks[adapter])  # (r, d_in) = s [A_s, ..., A_s]
        return a, self.summed_up_projection(adapter, w0.dtype)  # B: (d_out, r/n) or (d_out, r)

    def delta_weight(self, adapter: str, w0: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_factors(adapter, w0)
        return b @ a
