"""DV-LoRA's layer: LoRA with trainable scaling vectors around the rank bottleneck, optionally gated.

    h = W0 x + g(x) * s * diag(b) B diag(d) A x                     s = alpha / r
    A (r, d_in), B (d_out, r)  -- PEFT's lora_A / lora_B;  d (r,), b (d_out,)  -- lora_dv_d / lora_dv_b
    g = 1                          gate "none"   (DV-LoRA)
    g = sigmoid(gamma)             gate "scalar" (GDV-LoRA, one learned scalar per layer: lora_gate)
    g(x) = sigmoid(w . x + c)      gate "input"  (GDV-LoRA, one scalar per token: lora_gate_proj)

With g independent of the input the update is the weight delta = g s diag(b) B diag(d) A: it
merges exactly and is plain LoRA of rank r with A' = g s diag(d) A and B' = diag(b) B. With the
input gate the update is not a weight (each token scales it differently): the layer runs on the
transformers engine only, and merge, get_delta_weight and export refuse it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rearqa.reader.adapters.custom import RearLoraLinear

RANDOM_STD = 0.02  # init "random": B ~ N(0, this); b and d ~ vector_init + N(0, 10 * this)
INPUT_GATE_REFUSAL = ("its GDV-LoRA gate depends on the input (gate 'input'), so the update is no "
                      "weight: it runs unmerged on the transformers engine only (reader.hf_adapter: unmerged)")


class DVLoraLinear(RearLoraLinear):
    method_name = "dvlora"
    method_containers = {"lora_dv_b": nn.ParameterDict, "lora_dv_d": nn.ParameterDict,
                         "lora_gate": nn.ParameterDict, "lora_gate_proj": nn.ModuleDict}

    def add_method_tensors(self, adapter: str, config) -> None:
        if not hasattr(self, "dv_gate"):
            self.dv_gate: dict[str, str] = {}
        r, init = self.r[adapter], config.dvlora_vector_init
        b = torch.full((self.out_features,), float(init))
        d = torch.full((r,), float(init))
        if config.dvlora_init == "random":
            nn.init.normal_(self.lora_B[adapter].weight, std=RANDOM_STD)
            b += torch.randn_like(b) * 10 * RANDOM_STD
            d += torch.randn_like(d) * 10 * RANDOM_STD
        self.lora_dv_b[adapter] = nn.Parameter(b)
        self.lora_dv_d[adapter] = nn.Parameter(d)
        gate = self.dv_gate[adapter] = config.dvlora_gate
        if gate == "scalar":
            self.lora_gate[adapter] = nn.Parameter(torch.zeros(1))  # sigmoid(0) = 1/2
        elif gate == "input":
            proj = nn.Linear(self.in_features, 1)
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
            self.lora_gate_proj[adapter] = proj

    def export_refusal(self, adapter: str) -> str | None:
        return INPUT_GATE_REFUSAL if self.dv_gate[adapter] == "input" else None

    def _gate(self, adapter: str) -> torch.Tensor | float:
        return torch.sigmoid(self.lora_gate[adapter]) if self.dv_gate[adapter] == "scalar" else 1.0

    def adapter_output(self, adapter: str, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        # The vectors, the scaling and a scalar gate scale the factors (r (d_in + d_out) numbers),
        # not the activations: the same product without a pass over the (tokens, d_out) output,
        # which costs more than the low-rank matmuls at SmolLM2's widths.
        a, b = self._factors(adapter, x.dtype)
        out = F.linear(F.linear(self.lora_dropout[adapter](x), a), b)
        if self.dv_gate[adapter] == "input":
            return torch.sigmoid(self.lora_gate_proj[adapter](x)) * out  # (..., 1) per token
        return out

    def _factors(self, adapter: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(g s diag(d) A, diag(b) B) in `dtype`; g = 1 for the input gate (applied per token)."""
        a = self.lora_A[adapter].weight.to(dtype) * self.lora_dv_d[adapter].to(dtype)[:, None]
        b = self.lora_B[adapter].weight.to(dtype) * self.lora_dv_b[adapter].to(dtype)[:, None]
        gate = self._gate(adapter)
        gate = gate.to(dtype) if isinstance(gate, torch.Tensor) else gate
        return gate * self.scaling[adapter] * a, b  # A' (r, d_in), B' (d_out, r)

    def lora_factors(self, adapter: str, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._factors(adapter, w0.dtype)

    def delta_weight(self, adapter: str, w0: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_factors(adapter, w0)
        return b @ a
