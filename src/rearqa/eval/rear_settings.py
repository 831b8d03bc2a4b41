"""What one `python -m rearqa.eval.rear_eval` run does, as typed settings, and the registry of
reader builders its methods are loaded with.

`RearEvalSettings` is filled once from the command line (rear_eval.parse_settings) or built
directly (rearqa.eval.select), and every step of the run takes it. Torch-free apart from what
rearqa.reader.config imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rearqa.config_errors import ConfigError
from rearqa.eval.bundle import RANKERS
from rearqa.reader.config import DTYPES, READER_METHODS, ROUTINGS
from rearqa.reader.engines import ENGINES

# Methods that read a LoRA adapter over the base model, each given with --adapter-<method>.
ADAPTER_METHODS = ("rag-ft", "closed-book-ft")
# REAR fallbacks offered here ("" = the checkpoint's); the reader also knows best_passage, which
# this command has never offered.
EVAL_FALLBACKS = ("", "closed_book", "abstain")
EVAL_DTYPES = ("auto", *sorted(DTYPES))  # auto: bfloat16 on CUDA, float32 on CPU

# Reader builders (STYLE rule 3): method -> "module:function" of
# f(config: ReaderConfig, base_model: str | None, device: str) -> (reader, weights it loaded).
READER_BUILDERS: dict[str, str] = {
    "closed-book": "rearqa.eval.rear_runs:build_baseline_reader",
    "rag": "rearqa.eval.rear_runs:build_baseline_reader",
    "rear": "rearqa.eval.rear_runs:build_rear_reader",
    "rag-ft": "rearqa.eval.rear_runs:build_finetuned_reader",
    "closed-book-ft": "rearqa.eval.rear_runs:build_finetuned_reader",
}


def _positive_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


@dataclass
class RearEvalSettings:
    """One rear_eval run: which snapshot split, which methods with which weights, how the
    reader reads, and where the reports go."""

    snapshot: Path  # retrieval snapshot directory (rearqa.eval.bundle)
    split: str  # snapshot split, e.g. nq-test or nq-dev-select
    out: Path  # output directory: <out>/<method>/, rank_metrics.*, compare/, threshold_selection.json
    methods: tuple[str, ...] = ("rear",)  # reader methods run, in this order (READER_METHODS)
    checkpoint: Path | None = None  # REAR checkpoint; None = checkpoints/rear-smollm2
    base_model: Path | None = None  # base transformers checkpoint; None = the prepared SmolLM2
    adapters: dict[str, Path] = field(default_factory=dict)  # LoRA adapter dir per ADAPTER_METHODS method
    routing: str = ""  # REAR routing variant (path_reliability | knowledge_consistency); "" = the checkpoint's
    fallback: str = ""  # REAR when no passage is relevant (closed_book | abstain); "" = the checkpoint's
    retriever: str = "dense"  # snapshot ranking the reader's passages come from (bundle.RANKERS)
    k: int = 20  # passages per question given to the reader
    limit: int | None = None  # first N questions of the split; None = all
    answerable_only: bool = False  # of those, only the answerable ones (gold answer in the corpus)
    batch_size: int = 8  # questions per reader call
    max_new_tokens: int = 32  # cap on generated answer tokens
    max_passage_words: int = 150  # each passage is cut to this many words in the prompt
    prompt: str = "short"  # baseline prompt template (rearqa.reader.prompts)
    device: str = "auto"  # auto | cuda | cpu (or any torch device name)
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float32
    calibration_split: str | None = None  # split of the dense/BM25 Platt fits; None = the split's
    # dev-select (nq-test -> nq-dev-select); "none" skips their ECE
    resamples: int = 1000  # question-bootstrap resamples of the rank-head metrics
    seed: int = 0  # seeds each method's run and the bootstraps
    overwrite: bool = False  # start each method's run over instead of resuming it
    choose_threshold: bool = False  # select REAR's threshold and routing variant on this (dev) split
    grid_size: int = 101  # threshold candidates (score quantiles) of the selection
    dry_run: bool = False  # with choose_threshold: do not write the choice into the checkpoint
    passage_order: str = "retrieval"  # retrieval | reversed | shuffled:SEED (rearqa.eval.passage_order)
    backbone: str = ""  # an inference-time backbone with its budgets ("spatten:tokens=0.6,..."); "" none
    engine: str = "hf"  # hf (transformers, on `device`) | vllm (the in-process vLLM engine, CPU here)

    def __post_init__(self) -> None:
        self.snapshot, self.out = Path(self.snapshot), Path(self.out)
        for name in ("checkpoint", "base_model"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if not isinstance(self.split, str) or not self.split:
            raise ConfigError(f"split={self.split!r}: name a snapshot split, e.g. nq-test")
        self.methods = tuple(self.methods)
        if not self.methods or any(m not in READER_METHODS for m in self.methods):
            raise ConfigError(f"methods={list(self.methods)}: choose one or more of {list(READER_METHODS)}")
        unknown = [m for m in self.adapters if m not in ADAPTER_METHODS]
        if unknown:
            raise ConfigError(f"adapters for {unknown}: only {list(ADAPTER_METHODS)} read an adapter")
        self.adapters = {m: Path(path) for m, path in self.adapters.items()}
        for name, allowed in (("routing", ROUTINGS), ("fallback", EVAL_FALLBACKS),
                              ("retriever", RANKERS), ("dtype", EVAL_DTYPES), ("engine", tuple(ENGINES))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: choose one of {list(allowed)}")
        for name in ("k", "batch_size", "max_new_tokens", "max_passage_words", "resamples", "grid_size"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be a positive integer")
        if self.limit is not None and not _positive_int(self.limit):
            raise ConfigError(f"limit={self.limit!r}: must be a positive integer, or None for all questions")
        for name in ("prompt", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be a non-empty name")
        if self.calibration_split is not None and not isinstance(self.calibration_split, str):
            raise ConfigError(f"calibration_split={self.calibration_split!r}: a split name, 'none', "
                              "or None for the split's dev-select")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed={self.seed!r}: must be an integer")
        for name in ("overwrite", "choose_threshold", "dry_run"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be True or False")
        from rearqa.eval.passage_order import parse_order

        parse_order(self.passage_order)

    def adapter(self, method: str) -> str:
        """The adapter directory given for `method`, "" when none."""
        return str(self.adapters.get(method) or "")
