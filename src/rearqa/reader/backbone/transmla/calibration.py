"""Calibration text for TransMLA, and perplexity on held-out text.

TransMLA fits its rotations to the keys and values the model produces on real text (the paper uses
wikitext2, 128 samples x 256 tokens). Here the text is the corpus the retriever serves, because
that is what the reader reads at run time. Recipe (TransMLA's `utils.py`): passages are shuffled,
joined, tokenised and cut into samples of exactly `n_tokens` tokens, so no sample is padded.

The corpus is split once by a seeded permutation: the first part calibrates, the last part is
held out for perplexity, so a conversion is never scored on the text it was fitted to. The
reader layer may not import the data home (tests/test_layers.py), so callers pass the corpus path
(`rearqa.assets.corpus_file(home)`) or the passages themselves.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

HELDOUT_FRACTION = 0.1  # share of the corpus passages kept out of calibration, for perplexity


@dataclass(frozen=True)
class CalibrationRecord:
    """What a conversion was fitted to; the transform writes it into its manifest."""

    source: str  # the passages file (or a name for passages given in memory)
    n_samples: int
    n_tokens: int  # tokens per sample
    seed: int  # seeds the passage split and the shuffle
    sha256: str  # of the token ids (int64, row-major), so two runs can be told apart or matched

    @classmethod
    def of(cls, tokens: torch.Tensor, source: str | Path, seed: int) -> "CalibrationRecord":
        return cls(str(source), tokens.shape[0], tokens.shape[1], seed, tokens_sha256(tokens))

    def to_dict(self) -> dict:
        return asdict(self)


def tokens_sha256(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def read_passages(path: str | Path) -> list[str]:
    """The `text` of every record of a corpus JSONL file (the retriever's passages)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def split_passages(passages: Sequence[str], seed: int,
                   heldout_fraction: float = HELDOUT_FRACTION) -> tuple[list[str], list[str]]:
    """(calibration, held-out): a seeded permutation, its first part and its last part."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction={heldout_fraction}: must be in (0, 1)")
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    cut = len(order) - max(1, round(len(order) * heldout_fraction))
    return [passages[i] for i in order[:cut]], [passages[i] for i in order[cut:]]


def calibration_batches(tokenizer, passages: Sequence[str], n_samples: int, n_tokens: int,
                        seed: int) -> torch.Tensor:
    """(n_samples, n_tokens) token ids: the passages shuffled, joined and cut into equal samples.

    Passages are tokenised one at a time (separated by a blank line, no special tokens) until
    enough tokens are gathered; the remainder of the last one is dropped.
    """
    if n_samples < 1 or n_tokens < 1:
        raise ValueError(f"n_samples={n_samples}, n_tokens={n_tokens}: both must be positive")
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    need, ids = n_samples * n_tokens, []
    for i in order:
        ids.extend(tokenizer(passages[i] + "\n\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise ValueError(f"{len(passages)} passages hold {len(ids)} tokens; {n_samples} samples of "
                         f"{n_tokens} need {need}: ask for fewer or shorter samples")
    return torch.tensor(ids[:need], dtype=torch.long).view(n_samples, n_tokens)  # (n, T)


def corpus_calibration(tokenizer, path: str | Path, n_samples: int, n_tokens: int, seed: int,
                       heldout_samples: int = 0) -> tuple[torch.Tensor, torch.Tensor | None,
                                                           CalibrationRecord]:
    """(calibration tokens, held-out tokens or None, record) from a corpus JSONL file."""
    calib_passages, heldout_passages = split_passages(read_passages(path), seed)
    calib = calibration_batches(tokenizer, calib_passages, n_samples, n_tokens, seed)
    heldout = (calibration_batches(tokenizer, heldout_passages, heldout_samples, n_tokens, seed)
               if heldout_samples else None)
    return calib, heldout, CalibrationRecord.of(calib, path, seed)


@torch.no_grad()
def sample_nll(model: torch.nn.Module, batches: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Mean next-token negative log-likelihood of each sample (n,), in float64."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, batches.shape[0], batch_size):
        ids = batches[start:start + batch_size].to(device)  # (b, T)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].double()  # (b, T-1, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:],
                                                reduction="none")  # (b, T-1)
        out.append(nll.mean(dim=1).cpu())  # (b,)
    return torch.cat(out)


def perplexity(model: torch.nn.Module, batches: torch.Tensor, batch_size: int = 8) -> float:
    """exp of the mean next-token NLL over all samples (equal lengths, so a mean of the means)."""
    return math.exp(sample_nll(model, batches, batch_size).mean().item())


def save_calibration(path: str | Path, tokens: torch.Tensor, record: CalibrationRecord) -> Path:
    """Calibration token ids and their record as JSON, so another machine (the GPU one, which has
    no corpus) converts on exactly the same text: `load_calibration` checks the sha256."""
    path = Path(path)
    path.write_text(json.dumps({"record": record.to_dict(), "tokens": tokens.tolist()}) + "\n")
    return path


def load_calibration(path: str | Path) -> tuple[torch.Tensor, CalibrationRecord]:
    """(tokens, record) from a `save_calibration` file; ValueError when it is malformed or its ids
    do not hash to the recorded sha256."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        record = CalibrationRecord(**data["record"])
        tokens = torch.tensor(data["tokens"], dtype=torch.long)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a calibration file written by save_calibration ({exc})") from exc
    if tokens.dim() != 2 or tuple(tokens.shape) != (record.n_samples, record.n_tokens):
        raise ValueError(f"{path}: tokens of shape {tuple(tokens.shape)}, the record says "
                         f"({record.n_samples}, {record.n_tokens})")
    if tokens_sha256(tokens) != record.sha256:
        raise ValueError(f"{path}: the token ids do not match the recorded sha256; the file was changed")
    return tokens, record
