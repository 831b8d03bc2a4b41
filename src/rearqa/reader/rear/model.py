"""The REAR reader model: any causal LM plus a relevance rank head, scored in the same pass.

REAR (Wang et al., 2024) reads `{passage}<BEGIN_QUERY>{question}<GENERATE_SCORE>` and maps the
final (post-norm) hidden state h_s at `<GENERATE_SCORE>` to one relevance logit; the judgment token
chosen from that logit then conditions the answer. `RearModel` wraps a transformers
`AutoModelForCausalLM` (STYLE rule 4: wrap, never copy a model file).

Default head ("linear"): the rank head IS the `<RANK_SCORE>` row w of the output layer, and the
`<RANK_REF>` row is kept exactly zero, so

    relevance logit = logit(<RANK_SCORE>) - logit(<RANK_REF>) = h_s . w  (+ bias difference, if any)

at the last prompt token. That is a quantity a stock vLLM returns (logprobs restricted with
`allowed_token_ids=[RANK_SCORE, RANK_REF]`: a log-softmax over two tokens whose difference is the
logit difference), so the same weights serve on both engines with no patching. The head is read
through the output layer's own forward, so a PEFT-wrapped output layer (trainable new rows) needs
no special case. For the vLLM engine: ask for logprobs after the restriction (V1's
`logprobs_mode="processed_logprobs"`, `logprobs=2`, `max_tokens=1`, no temperature or penalties,
which would rescale or shift the two logits); raw logprobs also work, but list both tokens
only when both are in the top-k. The softmax normaliser cancels in the difference either way.

Control tokens never enter the LM loss: `forward` sets the logits of `suppressed_token_ids()` to
-inf, as generation does; otherwise the LM loss would push h . w down at every answer position and
fight the rank loss over the same row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rearqa.reader.rear.heads import (LinearRankHead, LowRankAttentionPooling,
                                      find_score_positions, positions_from_mask)
from rearqa.reader.rear.inputs import build_rear_input, collate_rear_inputs
from rearqa.reader.rear.config import RearConfig
from rearqa.reader.rear.tokens import REAR_TOKENS, RearTokenIds, add_rear_tokens

# Config attributes that transform logits after the output layer: the served logit difference
# would no longer be the head's h . w, so the linear head refuses such models.
_POST_HEAD_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling",
                               "output_multiplier_scale")


@dataclass
class RearOutput:
    """One training forward pass."""

    lm_logits: torch.Tensor  # (B, T, V), control tokens at -inf unless asked otherwise
    rank_logits: torch.Tensor  # (B,) float32 relevance logits
    score_positions: torch.Tensor  # (B,) index of <GENERATE_SCORE> in each row


def _unwrap(lm: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (LoRA layers stay injected)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def _base_weight(module: nn.Module) -> torch.Tensor:
    """The weight under a PEFT trainable-tokens wrapper, or the module's own."""
    adapter = getattr(module, "token_adapter", None)
    return (adapter.base_layer if adapter is not None else module).weight


def embeddings_tied(lm: nn.Module) -> bool:
    lm = _unwrap(lm)
    return _base_weight(lm.get_input_embeddings()) is _base_weight(lm.get_output_embeddings())


class RearModel(nn.Module):
    """A causal LM with REAR tokens and a rank head. Build it with `from_base` or `from_pretrained`."""

    def __init__(self, lm: nn.Module, tokenizer, config: RearConfig, token_ids: RearTokenIds,
                 base_vocab_size: int, base_model_dir: str | None = None) -> None:
        super().__init__()
        self.lm = lm  # the causal LM, or a PeftModel around it after add_lora()
        self.tokenizer = tokenizer
        self.config = config
        self.token_ids = token_ids
        self.base_vocab_size = base_vocab_size  # output rows before the REAR tokens were added
        self.base_model_dir = base_model_dir  # where the base weights came from (LoRA reloads)
        self.rank_head: LowRankAttentionPooling | None = None
        # Training's own parameters for the linear head (attach_linear_head); None when serving,
        # where the head is the <RANK_SCORE> row plus config.rank_offset.
        self.linear_head: LinearRankHead | None = None
        if config.head == "lowrank_attn":
            self.rank_head = LowRankAttentionPooling(
                self.causal_lm.get_input_embeddings().weight.shape[1], config.lowrank_heads,
                config.lowrank_rank, config.lowrank_key_dim, config.lowrank_use_score_state)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_base(cls, base_model: nn.Module, tokenizer, config: RearConfig | None = None, *,
                  init_new_rows: bool | None = None,
                  base_model_dir: str | Path | None = None) -> "RearModel":
        """Add the REAR tokens to `tokenizer` and `base_model` and wrap it (idempotent).

        The six tokens become additional special tokens; the embedding is resized with
        `resize_token_embeddings` only if their ids fall outside it. New rows are initialised
        deterministically: input rows of <BEGIN_QUERY>, <GENERATE_SCORE>, <RELEVANT>,
        <IRRELEVANT> to the mean of the old input rows (and, untied, their output rows to the mean
        of the old output rows); the <RANK_SCORE> and <RANK_REF> rows to zero, so the rank logit
        starts at 0. Rows count as new when their id is beyond the old matrix or their token was
        new to the tokenizer; `init_new_rows=True` forces it (reloading a LoRA checkpoint onto a
        fresh base), False never does.

        Tied input/output embeddings (SmolLM2): one matrix holds both, so the <RANK_SCORE> row is
        also that token's input embedding. Harmless: it is never an input (suppressed in
        generation, never placed in a prompt). Untied: the same scheme runs on the output layer
        alone. Either way <RANK_REF>'s row must stay exactly zero: a gradient hook zeroes its
        gradient for full-parameter training, and LoRA training never makes it trainable.
        """
        config = config or RearConfig()
        lm = base_model
        old_rows = lm.get_input_embeddings().weight.shape[0]
        before = set(tokenizer.get_vocab())
        token_ids, _ = add_rear_tokens(tokenizer)
        added_now = {tokenizer.convert_tokens_to_ids(t) for t in REAR_TOKENS if t not in before}
        needed = max(len(tokenizer), max(token_ids.all_ids()) + 1)
        if needed > old_rows:
            lm.resize_token_embeddings(needed, mean_resizing=False)  # rows set just below
        if init_new_rows is None:
            new = {i for i in token_ids.all_ids() if i >= old_rows or i in added_now}
        else:
            new = set(token_ids.all_ids()) if init_new_rows else set()
        # The base vocabulary ends where the REAR tokens start (padded vocabularies included).
        base_vocab = min(old_rows, min(token_ids.all_ids()))
        _init_rows(lm, token_ids, new, base_vocab)
        if config.head == "linear":
            _check_logits_are_output_layer(lm)
        source = str(base_model_dir) if base_model_dir else getattr(lm, "name_or_path", "") or None
        model = cls(lm, tokenizer, config, token_ids, base_vocab, source)
        model.check_ref_row_zero()
        model._guard_ref_row()
        gen = getattr(lm, "generation_config", None)
        if gen is not None:
            gen.suppress_tokens = sorted(set(gen.suppress_tokens or []) |
                                         set(model.suppressed_token_ids()))
        return model

    @classmethod
    def from_pretrained(cls, path: str | Path, base_model_dir: str | Path | None = None,
                        dtype: torch.dtype | None = None, is_trainable: bool = False) -> "RearModel":
        """Load what `save_pretrained` or `merge_to_plain_checkpoint` wrote (see checkpoint.py)."""
        from rearqa.reader.rear.checkpoint import load_rear

        return load_rear(cls, path, base_model_dir, dtype, is_trainable)

    def save_pretrained(self, path: str | Path) -> Path:
        """safetensors + JSON; a LoRA model saves its adapter and new token rows only."""
        from rearqa.reader.rear.checkpoint import save_rear

        return save_rear(self, path)

    def merge_to_plain_checkpoint(self, out_dir: str | Path) -> Path:
        """A plain transformers checkpoint (LoRA merged, head in the <RANK_SCORE> row) for vLLM."""
        from rearqa.reader.rear.checkpoint import merge_rear

        return merge_rear(self, out_dir)

    # ------------------------------------------------------------------ accessors

    @property
    def causal_lm(self) -> nn.Module:
        """The transformers causal LM (inside the PEFT wrapper when there is one)."""
        return _unwrap(self.lm)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.lm, "peft_config")

    @property
    def tied_embeddings(self) -> bool:
        return embeddings_tied(self.lm)

    def suppressed_token_ids(self, include_judgments: bool = False) -> list[int]:
        """Token ids normal generation must never emit (logits processor / bad_words)."""
        return self.token_ids.suppressed_ids(include_judgments)

    @torch.no_grad()
    def output_row(self, token_id: int) -> torch.Tensor:
        """The effective output-layer row of a token, through any wrapper (PEFT tokens, LoRA), (D,).

        Read off the layer's forward on the identity (minus its bias), so it is what serving sees.
        """
        out = self.causal_lm.get_output_embeddings()
        weight = out.weight if isinstance(out, nn.Linear) else None
        if weight is not None:
            return weight[token_id].detach().clone()
        dim = self.causal_lm.get_input_embeddings().weight.shape[1]
        probe = torch.eye(dim, device=self.causal_lm.device, dtype=self.causal_lm.dtype)
        return (out(probe) - out(torch.zeros_like(probe[:1])))[:, token_id]  # (D,)

    @torch.no_grad()
    def set_output_row(self, token_id: int, values: torch.Tensor) -> None:
        """Write a token's output-layer row: into PEFT's trainable token rows when the row is one
        of them, else into the (untied or tied) output weight."""
        out = self.causal_lm.get_output_embeddings()
        adapter = getattr(out, "token_adapter", None)
        if adapter is not None:
            for name, indices in adapter.token_indices.items():
                if token_id in indices:
                    delta = adapter.trainable_tokens_delta[name]
                    delta[indices.index(token_id)] = values.to(delta)
                    return
        weight = _base_weight(out)
        weight[token_id] = values.to(weight)

    def attach_linear_head(self, center: torch.Tensor | None = None) -> LinearRankHead:
        """Give the linear head its own fp32 parameters for training, starting from the current
        row and offset (scores unchanged); `center`: the feature mean to subtract (centred head)."""
        if self.config.head != "linear":
            raise ValueError(f"attach_linear_head is for the linear head, not {self.config.head!r}")
        ids = self.token_ids
        weight = (self.output_row(ids.rank_score) - self.output_row(ids.rank_ref)).float()
        bias = self.config.rank_offset + (0.0 if center is None else float(center.float() @ weight))
        device = self.causal_lm.get_input_embeddings().weight.device
        self.linear_head = LinearRankHead(weight.numel(), weight, bias, center).to(device)
        return self.linear_head

    def export_linear_head(self) -> None:
        """Write the trained linear head into the <RANK_SCORE> row and config.rank_offset, the form
        both engines serve (vLLM reads logprob(<RANK_SCORE>) - logprob(<RANK_REF>) + offset)."""
        if self.linear_head is None:
            return
        row, offset = self.linear_head.as_row_and_offset()
        self.set_output_row(self.token_ids.rank_score, row)
        self.config.rank_offset = offset

    def check_ref_row_zero(self) -> None:
        row = self.output_row(self.token_ids.rank_ref)
        if torch.count_nonzero(row):
            raise ValueError("the <RANK_REF> output row is not zero, so the served logit "
                             "difference would not be the rank logit. A checkpoint not made by "
                             "RearModel? For a fresh base whose tokenizer already has the REAR "
                             "tokens, pass from_base(..., init_new_rows=True)")

    def _guard_ref_row(self) -> None:
        """Zero <RANK_REF>'s gradient in place whenever the output weight gets one."""
        ref = self.token_ids.rank_ref

        def zero_ref(param: torch.Tensor) -> None:
            if param.grad is not None:
                param.grad[ref].zero_()

        weight = self.causal_lm.get_output_embeddings().weight
        if weight.requires_grad:  # frozen under LoRA, where <RANK_REF> is simply not trainable
            weight.register_post_accumulate_grad_hook(zero_ref)

    # ------------------------------------------------------------------ forward passes

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final post-norm hidden states, (B, T, D); positions count attended tokens only."""
        decoder = self.causal_lm.get_decoder()
        out = decoder(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=positions_from_mask(attention_mask), use_cache=False)
        return out.last_hidden_state

    def rank_logits(self, hidden: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor,
                    passage_mask: torch.Tensor | None = None,
                    score_logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) relevance logits from final hidden states (B, T, D) read at `positions` (B,).

        `score_logits`: the output layer's logits at those positions when the caller has them
        (saves a second output-layer pass for the linear head); `passage_mask`: the tokens the
        lowrank_attn head pools (default: the whole prompt before <GENERATE_SCORE>)."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        h_s = hidden[rows, positions]  # (B, D)
        if self.linear_head is not None:
            return self.linear_head(h_s)
        if self.rank_head is None:
            if score_logits is None:
                score_logits = self.causal_lm.get_output_embeddings()(h_s)  # (B, V)
            ids = self.token_ids
            diff = score_logits[:, ids.rank_score] - score_logits[:, ids.rank_ref]
            return diff.float() + self.config.rank_offset
        if passage_mask is None:  # pool the whole prompt before <GENERATE_SCORE>
            before = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < positions[:, None]
            passage_mask = attention_mask.bool() & before
        return self.rank_head(hidden, passage_mask.to(hidden.device), h_s).float()

    def score_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) index of each row's last attended <GENERATE_SCORE>."""
        return find_score_positions(input_ids, attention_mask, self.token_ids.generate_score)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              passage_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) prompts, left or right padded -> (B,) relevance logits, in one forward pass.

        Each row's score is read at its last attended <GENERATE_SCORE>, wherever padding put it.
        Runs under the caller's grad mode (wrap in torch.inference_mode() to serve).
        """
        positions = self.score_positions(input_ids, attention_mask)
        hidden = self.hidden_states(input_ids, attention_mask)
        return self.rank_logits(hidden, positions, attention_mask, passage_mask, None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                passage_mask: torch.Tensor | None = None,
                mask_control_tokens: bool = True) -> RearOutput:
        """LM logits and rank logits from ONE forward pass (training)."""
        positions = self.score_positions(input_ids, attention_mask)
        hidden = self.hidden_states(input_ids, attention_mask)  # (B, T, D)
        logits = self.causal_lm.get_output_embeddings()(hidden)  # (B, T, V)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        rank = self.rank_logits(hidden, positions, attention_mask, passage_mask, logits[rows, positions])
        if mask_control_tokens:
            # In place: the output layer's backward does not need its output.
            logits.index_fill_(-1, torch.tensor(self.suppressed_token_ids(),
                                                device=logits.device), float("-inf"))
        return RearOutput(logits, rank, positions)

    @torch.inference_mode()
    def score_texts(self, question: str, passages: list[str]) -> torch.Tensor:
        """Relevance logits of k passage texts for one question, (k,), in one batch."""
        inputs = [build_rear_input(self.tokenizer, p, question,
                                   use_chat_template=self.config.use_chat_template,
                                   question_first=self.config.question_first)
                  for p in passages]
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        batch = collate_rear_inputs(inputs, pad, padding_side="left")
        device = next(self.parameters()).device
        return self.score(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                          batch["passage_mask"].to(device) if self.rank_head is not None else None)


@torch.no_grad()
def _init_rows(lm: nn.Module, ids: RearTokenIds, new: set[int], old_rows: int) -> None:
    """Deterministic init of the new REAR rows (see RearModel.from_base)."""
    if not new:
        return
    inp = lm.get_input_embeddings().weight
    out_layer = lm.get_output_embeddings()
    out = out_layer.weight
    words = [ids.begin_query, ids.generate_score, ids.relevant, ids.irrelevant]
    rank_rows = [ids.rank_score, ids.rank_ref]
    mean_in = inp[:old_rows].mean(dim=0)
    mean_out = out[:old_rows].mean(dim=0)
    tied = inp is out
    for i in words:
        if i in new:
            inp[i] = mean_in
            if not tied:
                out[i] = mean_out
    for i in rank_rows:
        if i in new:
            inp[i] = 0.0
            out[i] = 0.0
    bias = getattr(out_layer, "bias", None)
    if bias is not None:
        mean_bias = bias[:old_rows].mean()
        for i in new:
            bias[i] = 0.0 if i in rank_rows else mean_bias


def _check_logits_are_output_layer(lm: nn.Module) -> None:
    """Refuse models whose served logits are not the output layer's (best effort, by config)."""
    config = getattr(lm, "config", None)
    config = getattr(config, "get_text_config", lambda: config)()
    for name in _POST_HEAD_LOGIT_TRANSFORMS:
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            raise ValueError(f"{type(lm).__name__} transforms its logits after the output layer "
                             f"({name}={value}), so the served <RANK_SCORE> - <RANK_REF> logit would "
                             "not be the rank logit; use head='lowrank_attn' (transformers only)")
