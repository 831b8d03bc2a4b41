"""The REAR special tokens and their ids in a tokenizer.

REAR (Wang et al., 2024, "REAR: A Relevance-Aware Retrieval-Augmented Framework for Open-Domain
Question Answering") marks each input as `{passage}<BEGIN_QUERY>{question}<GENERATE_SCORE>` and
conditions the answer on a judgment token, `<RELEVANT>` or `<IRRELEVANT>`.

Two more tokens are output-only. They never appear in an input; they exist so that the linear rank
head can live in the output layer, where a stock vLLM computes it:

    <RANK_SCORE>  its output row is the rank head w, so its logit at <GENERATE_SCORE> is h . w
    <RANK_REF>    its output row is kept exactly zero, so its logit is always 0

`logprob(<RANK_SCORE>) - logprob(<RANK_REF>)` is therefore the raw relevance logit, whatever the
softmax normaliser was. None of the control tokens may be generated: see `suppressed_ids`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

BEGIN_QUERY = "<BEGIN_QUERY>"
GENERATE_SCORE = "<GENERATE_SCORE>"
RELEVANT = "<RELEVANT>"
IRRELEVANT = "<IRRELEVANT>"
RANK_SCORE = "<RANK_SCORE>"
RANK_REF = "<RANK_REF>"

# Order fixes the ids given to a tokenizer that has none of them: base vocab + 0 .. + 5.
REAR_TOKENS: tuple[str, ...] = (BEGIN_QUERY, GENERATE_SCORE, RELEVANT, IRRELEVANT, RANK_SCORE,
                                RANK_REF)
JUDGMENT_TOKENS = {"relevant": RELEVANT, "irrelevant": IRRELEVANT}


@dataclass(frozen=True)
class RearTokenIds:
    """The ids of the six REAR tokens in one tokenizer."""

    begin_query: int
    generate_score: int
    relevant: int
    irrelevant: int
    rank_score: int
    rank_ref: int

    def judgment(self, name: str) -> int:
        """Id of the judgment token for "relevant" / "irrelevant"."""
        if name not in JUDGMENT_TOKENS:
            raise ValueError(f"judgment={name!r}: choose one of {sorted(JUDGMENT_TOKENS)}")
        return self.relevant if name == "relevant" else self.irrelevant

    def suppressed_ids(self, include_judgments: bool = False) -> list[int]:
        """Ids that normal generation must never emit (for a logits processor or bad-words list).

        The judgment tokens are forced, never sampled, by relevance-guided generation; pass
        `include_judgments=True` to ban them after the forced first step as well.
        """
        ids = [self.begin_query, self.generate_score, self.rank_score, self.rank_ref]
        return ids + ([self.relevant, self.irrelevant] if include_judgments else [])

    def all_ids(self) -> list[int]:
        return [self.begin_query, self.generate_score, self.relevant, self.irrelevant,
                self.rank_score, self.rank_ref]

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def add_rear_tokens(tokenizer) -> tuple[RearTokenIds, int]:
    """Add the REAR tokens as additional special tokens (idempotent).

    Returns the ids and how many tokens were new to this tokenizer. Tokens already present keep
    their ids; other extra special tokens the tokenizer has are kept.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in REAR_TOKENS if t not in vocab]
    added = 0
    if missing:
        added = tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                             replace_extra_special_tokens=False)
    return rear_token_ids(tokenizer), added


def rear_token_ids(tokenizer) -> RearTokenIds:
    """The ids of the REAR tokens; raises if the tokenizer lacks any of them."""
    # Per-token look-ups, not get_vocab(): this runs once per training input, and building the
    # whole vocabulary dict each time was most of a GPU training step's cost.
    ids = tokenizer.convert_tokens_to_ids(list(REAR_TOKENS))
    missing = [t for t, i in zip(REAR_TOKENS, ids)
               if i is None or tokenizer.convert_ids_to_tokens(i) != t]
    if missing:
        raise ValueError(f"tokenizer lacks the REAR tokens {missing}; call add_rear_tokens() "
                         "(RearModel.from_base does) first")
    return RearTokenIds(*ids)
