"""REAR training losses: LM loss on the answer plus a bi-granularity rank loss.

From REAR (Wang et al., 2024) and its code (see shared/papers/REAR-and-RAG-toolkits.md):

    L      = L_lm + beta * L_rank                               (beta = 1)
    L_rank = 0.5 * L_fine + bce_weight * L_coarse               (bce_weight: 0.3 in stage 2)
    L_coarse  pointwise BCE of each passage's logit against label >= 0.5, negatives weighted
    L_fine    RankNet over the passages of one question: for every pair with y_i - y_j > minor_diff
              (0.1), BCEWithLogits(s_i - s_j, 1) = log(1 + exp(-(s_i - s_j))), mean over pairs

Stage 1 of REAR trains the coarse loss alone; stage 2 the bi-granularity loss over groups of 8.
Every loss returns a scalar that stays in the graph even when nothing contributes (no answer
tokens, no ordered pairs), so a training step never has to special-case an empty batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE, (B, T, V) logits and (B, T) unshifted labels with -100 = no loss.

    Mean over the labelled tokens of the batch; 0 (with a graph) when there are none. Logits of
    -inf (masked control tokens) are fine as long as no label points at them.
    """
    pred = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # (B*(T-1), V)
    target = labels[:, 1:].reshape(-1)  # token t is predicted at position t-1
    total = F.cross_entropy(pred, target, ignore_index=-100, reduction="sum")
    return total / (target != -100).sum().clamp(min=1)


def lm_loss_at_labels(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor,
                      suppressed: list[int] | None = None) -> torch.Tensor:
    """`lm_loss` from the final hidden states (B, T, D): the output layer runs on the labelled
    positions only, so a step holds (answer tokens, V) logits instead of (B, T, V). Same value
    as lm_loss(head(hidden), labels) (with the `suppressed` token columns at -inf, as REAR masks
    its control tokens); for rag-ft (answers ~5 of ~400 tokens) ~80x less memory.
    """
    target = labels[:, 1:]
    keep = target != -100
    logits = head(hidden[:, :-1][keep]).float()  # (N, V)
    if suppressed:
        logits = logits.index_fill(-1, torch.tensor(suppressed, device=logits.device), float("-inf"))
    total = F.cross_entropy(logits, target[keep], reduction="sum")
    return total / keep.sum().clamp(min=1)


def lm_loss_sum(logits: torch.Tensor, targets: torch.Tensor,
                suppressed: torch.Tensor | None = None) -> torch.Tensor:
    """The sum-and-count form of `lm_loss_at_labels`: the summed next-token CE of (N, V)
    output-layer logits at labelled positions against their (N,) tokens, in fp32, with the
    `suppressed` token columns at -inf. The caller gathered the positions itself and divides by
    the count it knows on the host, so that a step split into chunks (or spread over devices)
    still takes the mean over all its labelled tokens, never a mean of chunk means."""
    logits = logits.float()
    if suppressed is not None and suppressed.numel():
        logits = logits.index_fill(-1, suppressed, float("-inf"))
    return F.cross_entropy(logits, targets, reduction="sum")


def pointwise_bce(scores: torch.Tensor, labels: torch.Tensor, pos_threshold: float = 0.5,
                  neg_weight: float = 1.0) -> torch.Tensor:
    """Coarse loss: BCE of each logit against the binary label (label >= pos_threshold).

    Negatives are weighted by `neg_weight`, positives by 1; the weighted losses are averaged over
    all passages (torch's weighted-mean convention: divide by N, not by the weight sum). Labels
    that are NaN mark padding and are skipped.
    """
    scores, labels = scores.reshape(-1).float(), labels.reshape(-1).float()
    # Padding is weighted out rather than indexed out: boolean indexing would read the mask back
    # to the host (a GPU sync in every training step). NaN >= threshold is False: target 0.
    valid = ~torch.isnan(labels)
    target = (labels >= pos_threshold).float()
    weight = torch.where(target > 0, 1.0, neg_weight).to(scores) * valid
    total = F.binary_cross_entropy_with_logits(scores, target, weight=weight, reduction="sum")
    return total / valid.sum().clamp(min=1)


def _ordered_pairs(labels: torch.Tensor, groups: torch.Tensor, minor_diff: float) -> torch.Tensor:
    """(N, N) bool: i and j in one group and y_i - y_j > minor_diff (NaN labels never pair)."""
    same = groups[:, None] == groups[None, :]
    return same & ((labels[:, None] - labels[None, :]) > minor_diff)


def pairwise_ranknet(scores: torch.Tensor, graded_labels: torch.Tensor,
                     group_ids: torch.Tensor | None = None, minor_diff: float = 0.1,
                     positive_pair_weight: float = 1.0, pos_threshold: float = 0.5) -> torch.Tensor:
    """Fine loss: RankNet over ordered pairs within each question's group of passages.

    scores/graded_labels: (G, n) -- one row per question -- or (N,) with `group_ids` (N,).
    Weighted mean of log(1 + exp(-(s_i - s_j))) over all pairs with y_i - y_j > minor_diff, pooled
    across groups; 0 with a graph when there is no such pair. NaN labels mark padding slots. A pair
    of two positives (both labels >= pos_threshold: their grades differ only by how many
    retrievers rank them high) weighs `positive_pair_weight` (0 drops it), a positive-negative 1.
    """
    if scores.dim() == 2:
        groups = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(scores)
        scores, graded_labels, group_ids = scores.reshape(-1), graded_labels.reshape(-1), groups.reshape(-1)
    elif group_ids is None:
        raise ValueError("pairwise_ranknet needs (G, n) scores or group_ids for (N,) scores")
    if scores.shape != graded_labels.shape or scores.shape != group_ids.shape:
        raise ValueError(f"shapes differ: scores {tuple(scores.shape)}, labels "
                         f"{tuple(graded_labels.shape)}, groups {tuple(group_ids.shape)}")
    scores, labels = scores.float(), graded_labels.float()
    pairs = _ordered_pairs(labels, group_ids, minor_diff).float()  # (N, N) pair weights
    if positive_pair_weight != 1.0:
        both = (labels[:, None] >= pos_threshold) & (labels[None, :] >= pos_threshold)
        pairs = pairs * torch.where(both, positive_pair_weight, 1.0).to(pairs)
    margin = scores[:, None] - scores[None, :]  # (N, N): s_i - s_j
    # Masked sum over the pairs, not margin[pairs]: no host read of how many pairs there are.
    total = (F.softplus(-margin) * pairs).sum()  # BCEWithLogits(s_i - s_j, 1) per pair
    return total / pairs.sum().clamp(min=1e-12)  # no pairs: 0, with a graph


def bi_granularity(scores: torch.Tensor, graded_labels: torch.Tensor,
                   group_ids: torch.Tensor | None = None, minor_diff: float = 0.1,
                   bce_weight: float = 0.3, pos_threshold: float = 0.5,
                   neg_weight: float = 1.0, positive_pair_weight: float = 1.0) -> torch.Tensor:
    """L_rank = 0.5 * pairwise_ranknet + bce_weight * pointwise_bce."""
    fine = pairwise_ranknet(scores, graded_labels, group_ids, minor_diff, positive_pair_weight,
                            pos_threshold)
    coarse = pointwise_bce(scores, graded_labels, pos_threshold, neg_weight)
    return 0.5 * fine + bce_weight * coarse


def rear_loss(lm: torch.Tensor, rank: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """L = L_lm + beta * L_rank."""
    return lm + beta * rank


@dataclass
class RearLossConfig:
    """Weights of the REAR objective."""

    beta: float = 1.0  # weight of the rank loss against the LM loss
    fine: bool = True  # False: coarse BCE only (REAR stage 1); True: bi-granularity (stage 2)
    bce_weight: float = 0.3  # weight of the coarse BCE inside the bi-granularity loss
    minor_diff: float = 0.1  # smallest graded-label gap that makes an ordered RankNet pair
    pos_threshold: float = 0.5  # graded label at or above which a passage counts as relevant
    neg_weight: float = 1.0  # BCE weight of the negatives (positives weigh 1)
    positive_pair_weight: float = 1.0  # RankNet weight of a pair of two positives (0 = no such pairs)
    lm_weight: float = 1.0  # weight of the LM loss (0 = a rank-only stage)

    def __post_init__(self) -> None:
        from rearqa.config_errors import ConfigError

        for name in ("beta", "bce_weight", "minor_diff", "pos_threshold", "neg_weight",
                     "positive_pair_weight", "lm_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value < 0:
                raise ConfigError(f"loss.{name}={value!r}: must be a finite number >= 0")
        if not isinstance(self.fine, bool):
            raise ConfigError(f"loss.fine={self.fine!r}: must be true or false")


def compute_rear_loss(lm_logits: torch.Tensor | None, labels: torch.Tensor, rank_logits: torch.Tensor,
                      rank_labels: torch.Tensor, group_ids: torch.Tensor | None = None,
                      config: RearLossConfig | None = None,
                      lm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The full objective and its parts: {"loss", "lm", "rank"}. `lm`: the LM loss when the
    caller computed it already (rear_lm_loss_and_rank), else it is lm_loss(lm_logits)."""
    config = config or RearLossConfig()
    lm = lm_loss(lm_logits, labels) if lm is None else lm
    if config.fine:
        rank = bi_granularity(rank_logits, rank_labels, group_ids, config.minor_diff,
                              config.bce_weight, config.pos_threshold, config.neg_weight,
                              config.positive_pair_weight)
    else:
        rank = pointwise_bce(rank_logits, rank_labels, config.pos_threshold, config.neg_weight)
    return {"loss": rear_loss(config.lm_weight * lm, rank, config.beta), "lm": lm, "rank": rank}


def rear_lm_loss_and_rank(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          labels: torch.Tensor, passage_mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """A RearModel's (LM loss, (B,) rank logits) from one forward pass, with the output layer
    applied at the labelled positions and the score positions only: the same values as
    `model.forward` + `lm_loss`, without its (B, T, V) logits (tens of GiB for a 128-row batch)."""
    positions = model.score_positions(input_ids, attention_mask)
    hidden = model.hidden_states(input_ids, attention_mask)  # (B, T, D)
    rank = model.rank_logits(hidden, positions, attention_mask, passage_mask)
    lm = lm_loss_at_labels(hidden, model.causal_lm.get_output_embeddings(), labels,
                           model.suppressed_token_ids())
    return lm, rank


# ---------------------------------------------------------------------------- chunked steps
# A micro-batch forwarded as length-sorted chunks of right-padded rows
# (rearqa.training.data.token_rows.StepRows); the losses are taken once over all its rows.

def causal_hidden(causal_lm, input_ids: torch.Tensor) -> torch.Tensor:
    """Final post-norm hidden states (n, T, D) of right-padded rows.

    No attention mask: in a causal LM no real token attends to the pads after it, and a row's
    positions are 0..length-1 either way, so every state the losses read is the one the masked
    pass gives (the pads' own states differ, and are never read). Without a mask SDPA runs its
    causal kernel, with no (n, T, T) mask built and no host read of the mask."""
    return causal_lm.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state


def rows_at(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The states of (n, T, D) `hidden` at flat positions `index` into its n * T rows."""
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)  # (len(index), D)


def chunked_lm_loss(causal_lm, step) -> torch.Tensor:
    """The LM loss of a chunked micro-batch (`step`: StepRows): mean CE over all its labelled
    tokens, the output layer run once on their gathered states."""
    states = [rows_at(causal_hidden(causal_lm, c.input_ids), c.lm_index) for c in step.chunks]
    logits = causal_lm.get_output_embeddings()(torch.cat(states))  # (lm_tokens, V)
    targets = torch.cat([c.lm_targets for c in step.chunks])
    return lm_loss_sum(logits, targets) / max(step.lm_tokens, 1)


def rear_chunked_lm_and_rank(model, step, suppressed: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """`rear_lm_loss_and_rank` over a chunked micro-batch: (LM loss, (N,) rank logits in the
    micro-batch's row order). One output-layer pass covers the labelled positions of every chunk
    and, for a linear head served as its output row, every score position too; `suppressed` is
    `model.suppressed_token_ids()` as a tensor on the device (built once)."""
    lm = model.causal_lm
    hidden = [causal_hidden(lm, c.input_ids) for c in step.chunks]  # (n_c, T_c, D) each
    states = [rows_at(h, c.lm_index) for h, c in zip(hidden, step.chunks)]
    # The <RANK_SCORE> row is read off the same output-layer pass, unless the head has its own
    # parameters (attach_linear_head) or is the lowrank_attn module: then no row is read.
    linear = model.rank_head is None and model.linear_head is None
    if linear:
        states += [rows_at(h, c.score_index) for h, c in zip(hidden, step.chunks)]
    logits = lm.get_output_embeddings()(torch.cat(states))  # (lm_tokens [+ N], V)
    targets = torch.cat([c.lm_targets for c in step.chunks])
    lm_loss = lm_loss_sum(logits[:step.lm_tokens], targets, suppressed) / max(step.lm_tokens, 1)
    ranks, start = [], step.lm_tokens
    for h, c in zip(hidden, step.chunks):
        n = h.shape[0]
        score_logits = logits[start:start + n] if linear else None
        ranks.append(model.rank_logits(h, c.positions, None, c.passage_mask, score_logits))
        start += n
    rank = torch.cat(ranks)
    return lm_loss, (rank.index_select(0, step.order) if step.order is not None else rank)


# ---------------------------------------------------------------------------- distillation
# Hinton et al. (2015), "Distilling the Knowledge in a Neural Network": the student matches the
# teacher's softened next-token distribution; here at every position of a sequence (the
# teacher is the reader the student was converted from, so the whole distribution is the target).

def _kl_sum(student_states: torch.Tensor, teacher_states: torch.Tensor, student_head, teacher_head,
            temperature: float) -> torch.Tensor:
    """Summed KL(teacher || student) of (n, D) states' next-token distributions, in fp32."""
    student = F.log_softmax(student_head(student_states).float() / temperature, dim=-1)  # (n, V)
    with torch.no_grad():
        teacher = F.log_softmax(teacher_head(teacher_states).float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="sum")


def chunked_kl_sum(student_states: torch.Tensor, teacher_states: torch.Tensor, student_head,
                   teacher_head, temperature: float = 1.0, chunk: int = 1024) -> torch.Tensor:
    """sum over positions of KL(teacher || student) * T^2, from (N, D) final hidden states at the
    same N positions; the caller divides by N (the count it knows on the host).

    The output layer runs on `chunk` positions at a time, each chunk under activation
    checkpointing: its (chunk, V) logits are freed after the forward and recomputed in the
    backward, so a step holds one chunk's logits (49,152 columns for SmolLM2) at a time, never
    (N, V). T^2 keeps the gradients' scale as the temperature changes (Hinton et al.)."""
    from torch.utils.checkpoint import checkpoint

    total = student_states.new_zeros((), dtype=torch.float32)
    for start in range(0, student_states.shape[0], chunk):
        args = (student_states[start:start + chunk], teacher_states[start:start + chunk],
                student_head, teacher_head, temperature)
        if torch.is_grad_enabled() and student_states.requires_grad:
            total = total + checkpoint(_kl_sum, *args, use_reentrant=False)
        else:
            total = total + _kl_sum(*args)
    return total * temperature ** 2
