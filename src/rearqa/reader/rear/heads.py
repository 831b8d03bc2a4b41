"""Rank heads: where the relevance logit is read, and the low-rank attention pooling variant.

The default head is linear. Served, it is the `<RANK_SCORE>` row of the output layer (see tokens.py
and model.py), so its logit is `h_s . w + offset` with h_s the final, post-norm hidden state at
`<GENERATE_SCORE>` and the offset stored with the checkpoint. Trained, it is `LinearRankHead`: its
own fp32 weight and bias (own learning rate, no weight decay), optionally on centred features
s = (h_s - mu) . w + b, written into the row and the offset at save time. A row inside PEFT's
trainable token tensor at LoRA's learning rate started at zero and barely moved (docs/rear.md).

`LowRankAttentionPooling` is the variant after Mehta, Rangwala and Ramakrishnan (2019), "Low Rank
Factorization for Compact Multi-Head Self-Attention": each head j scores every pooled token state
h_t against a learned context vector c_j through a low-rank key map W_j = A_j B_j,

    e_tj = (h_t A_j)(B_j c_j) / sqrt(d_key)       A_j: (D, r), B_j: (r, d_key), c_j: (d_key,)
    alpha_.j = softmax_t(e_.j)  over the pooled tokens,   m_j = sum_t alpha_tj h_t

and a linear map of [m_1; ...; m_H] gives one logit. The prompt puts the passage BEFORE the question
and the LM is causal, so passage-token states never see the question; pooled alone they would
make a question-blind score. With `use_score_state` (default) the linear map also reads h_s,
which has seen both. This head is transformers-only: it is no row of the output layer, so a stock
vLLM cannot compute it.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LinearRankHead(nn.Module):
    """s = (h - center) . weight + bias, in fp32 whatever the model's dtype."""

    def __init__(self, dim: int, weight: torch.Tensor | None = None, bias: float = 0.0,
                 center: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if weight is None else weight.detach().float().clone())
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        self.register_buffer("center", torch.zeros(dim) if center is None else center.detach().float().clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B,)
        return (h.float() - self.center) @ self.weight + self.bias

    @torch.no_grad()
    def as_row_and_offset(self) -> tuple[torch.Tensor, float]:
        """The same map as an output row w and an offset: h . w + (b - mu . w)."""
        return self.weight.detach().clone(), float(self.bias - self.center @ self.weight)


def find_score_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         generate_score_id: int) -> torch.Tensor:
    """(B,) index of the last attended `<GENERATE_SCORE>` in each row, for left or right padding."""
    hits = (input_ids == generate_score_id) & attention_mask.bool()  # (B, T)
    missing = (~hits.any(dim=-1)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"rows {missing} have no <GENERATE_SCORE> token; build inputs with "
                         "build_rear_input()")
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(hits, positions, -1).amax(dim=-1)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) position ids counting attended tokens only, so padding side does not matter."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


class LowRankAttentionPooling(nn.Module):
    """Low-rank multi-head attention pooling to one relevance logit (see the module docstring)."""

    def __init__(self, hidden_size: int, heads: int, rank: int, key_dim: int,
                 use_score_state: bool = True) -> None:
        super().__init__()
        self.heads, self.rank, self.key_dim = heads, rank, key_dim
        self.use_score_state = use_score_state
        self.key_down = nn.Parameter(torch.empty(hidden_size, heads * rank))  # [A_1 .. A_H]
        self.key_up = nn.Parameter(torch.empty(heads, rank, key_dim))  # B_j
        self.context = nn.Parameter(torch.empty(heads, key_dim))  # c_j
        in_features = heads * hidden_size + (hidden_size if use_score_state else 0)
        self.out = nn.Linear(in_features, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.key_down, std=0.02)
        nn.init.normal_(self.key_up, std=1 / math.sqrt(self.rank))
        nn.init.normal_(self.context, std=1 / math.sqrt(self.key_dim))
        nn.init.normal_(self.out.weight, std=0.02)
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden: torch.Tensor, pool_mask: torch.Tensor,
                score_state: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D), pool_mask (B, T) bool, score_state (B, D) -> (B,) logits."""
        batch, length, _ = hidden.shape
        hidden = hidden.to(self.key_down.dtype)
        if not pool_mask.any(dim=-1).all():
            raise ValueError("every row needs at least one token to pool (passage_mask is empty)")
        # (h A_j)(B_j c_j): contract the context first so the (B, T, H, d_key) keys never exist.
        query = torch.einsum("hrk,hk->hr", self.key_up, self.context)  # (H, r)
        low = (hidden @ self.key_down).view(batch, length, self.heads, self.rank)  # (B, T, H, r)
        energy = torch.einsum("bthr,hr->bht", low, query) / math.sqrt(self.key_dim)  # (B, H, T)
        energy = energy.masked_fill(~pool_mask.bool()[:, None, :], float("-inf"))
        alpha = energy.softmax(dim=-1)  # (B, H, T)
        pooled = torch.einsum("bht,btd->bhd", alpha, hidden).reshape(batch, -1)  # (B, H*D)
        if self.use_score_state:
            pooled = torch.cat([pooled, score_state.to(pooled.dtype)], dim=-1)
        return self.out(pooled).squeeze(-1)
