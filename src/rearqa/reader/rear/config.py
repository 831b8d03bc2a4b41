"""The REAR reader's settings and their name lists, one copy each (STYLE rule 14).

`RearConfig` (head, prompt format, routing) is saved with every checkpoint; `RoutingConfig` says
how the final answer is chosen (rearqa.reader.rear.routing). Torch-free, so the reader's and the
training wing's config modules import the names from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rearqa.config_base import ConfigError, from_dict

# reader.engine -> the REAR reader class that runs on it (lazy: vLLM is imported only when asked).
REAR_ENGINES: dict[str, str] = {
    "hf": "rearqa.reader.rear.reader:RearReader",
    "vllm": "rearqa.reader.rear.vllm_reader:VllmRearReader",
}
# Rank heads: linear (an output-vocabulary row, vLLM-servable) | lowrank_attn (attention pooling, hf only).
HEAD_TYPES = ("linear", "lowrank_attn")
ROUTING_METHODS = ("path_reliability", "knowledge_consistency")
FALLBACKS = ("closed_book", "abstain", "best_passage")
THRESHOLD_OBJECTIVES = ("f1", "accuracy", "balanced_accuracy")


@dataclass
class RoutingConfig:
    """How the final answer is chosen; saved with the checkpoint because it depends on its scale."""

    method: str = "knowledge_consistency"  # path_reliability | knowledge_consistency
    threshold: float = 0.0  # a passage is judged relevant when its logit s_i > threshold
    gamma: float = 9.0  # weight of the confidence con_i in knowledge-consistency (REAR code: 9)
    fallback: str = "closed_book"  # when nothing clears the threshold: closed_book | abstain | best_passage

    def __post_init__(self) -> None:
        if self.method not in ROUTING_METHODS:
            raise ConfigError(f"routing.method={self.method!r}: choose one of {list(ROUTING_METHODS)}")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"routing.fallback={self.fallback!r}: choose one of {list(FALLBACKS)}")
        for name in ("threshold", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"routing.{name}={value!r}: must be a finite number")
        if self.gamma < 0:
            raise ConfigError(f"routing.gamma={self.gamma!r}: must be >= 0 (0 = path reliability "
                              "restricted to relevant passages)")


def sigmoid(x: float) -> float:
    """The logistic function of one number, without overflow for large |x|."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class RearConfig:
    """The REAR head, prompt format and routing; saved with every checkpoint."""

    head: str = "linear"  # linear (an output-vocabulary row, vLLM-servable) | lowrank_attn (hf only)
    lowrank_heads: int = 4  # attention heads of the lowrank_attn pooling
    lowrank_rank: int = 8  # rank r of each head's factorised key map W_j = A_j B_j
    lowrank_key_dim: int = 64  # width of each head's keys and context vector
    lowrank_use_score_state: bool = True  # also feed h at <GENERATE_SCORE> to the final linear map
    use_chat_template: bool = False  # prompt format the model is trained and served with
    question_first: bool = False  # scoring prompt: the question before the passage (REAR: after)
    routing: RoutingConfig = field(default_factory=RoutingConfig)  # threshold, gamma, fallback
    # linear head: added to the <RANK_SCORE> - <RANK_REF> logit difference, so the head's bias and
    # centring survive in a checkpoint whose head is an output row (RearModel.export_linear_head)
    rank_offset: float = 0.0
    # (a, b) of the Platt map p = sigmoid(a * logit + b) fitted on dev-select pairs (label: the
    # passage holds a gold answer), shown to users as the relevance probability; None: uncalibrated
    relevance_platt: list[float] | None = None

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise ConfigError(f"rear.head={self.head!r}: choose one of {list(HEAD_TYPES)}")
        for name in ("lowrank_heads", "lowrank_rank", "lowrank_key_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"rear.{name}={value!r}: must be a positive integer")
        for name in ("lowrank_use_score_state", "use_chat_template", "question_first"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"rear.{name}={getattr(self, name)!r}: must be true or false")
        if isinstance(self.rank_offset, bool) or not isinstance(self.rank_offset, (int, float)) \
                or not math.isfinite(self.rank_offset):
            raise ConfigError(f"rear.rank_offset={self.rank_offset!r}: must be a finite number")
        if self.relevance_platt is not None:
            ab = self.relevance_platt
            if not isinstance(ab, (list, tuple)) or len(ab) != 2 or any(
                    isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in ab):
                raise ConfigError(f"rear.relevance_platt={ab!r}: must be two finite numbers [a, b] "
                                  "(p = sigmoid(a * logit + b)), or null for none")
            self.relevance_platt = [float(ab[0]), float(ab[1])]
        if isinstance(self.routing, dict):
            self.routing = from_dict(RoutingConfig, self.routing, "rear.routing")
        if not isinstance(self.routing, RoutingConfig):
            raise ConfigError(f"rear.routing={self.routing!r}: must be a RoutingConfig or a mapping")
