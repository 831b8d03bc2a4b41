"""Settings of one training run (REAR or a fine-tuned baseline), filled from YAML or keywords.

    from rearqa.training.config import TrainConfig
    cfg = TrainConfig.from_yaml("my-run.yaml", steps=20, device="cpu")

Three methods share one recipe (LoRA on every linear layer but the output layer, AdamW, cosine
schedule) and one question set (the `*-dev-train` splits of a retrieval snapshot):

    rear            REAR inputs per passage, LM loss on the answer + beta * rank loss; a warm-up
                    stage trains the rank head with pointwise BCE, the main stage with the
                    bi-granularity loss (pointwise BCE + pairwise RankNet over each group)
    rag-ft          the plain chat RAG prompt (dense top-`rag_k` passages), LM loss on the answer
    closed-book-ft  the plain chat prompt with no passages, LM loss on the answer
    distill         heals a converted reader (`student`, e.g. TransMLA) towards the reader it was
                    converted from (`teacher`): KL(teacher || student) at every position of corpus
                    windows and rag-ft prompts (a REAR student: its REAR inputs, plus
                    `rank_mse_weight` x the MSE of the rank logits; rearqa.training.distill_task)
    loraprune       LoRAPrune: a LoRA over the `teacher` reader learns its distribution (the
                    distill data and loss) while attention groups and MLP channels are pruned on
                    a cubic schedule to prune_kv_groups / prune_mlp_channels per layer
                    (rearqa.training.loraprune_task)

The baselines train for a token budget (`token_budget`, or the tokens a finished REAR run logged,
`token_budget_from`), so all three see the same number of training tokens.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.reader.rear.config import HEAD_TYPES

# The task registry: method -> "module:Class" of what is trained (rearqa.training.train builds
# it with rearqa.registry.resolve). METHODS is its key list, so a method cannot be valid without
# a task behind it; these names are also the reader methods that serve the trained models
# (rearqa.reader.config.READERS).
TASKS: dict[str, str] = {
    "rear": "rearqa.training.rear_task:RearTask",
    "rag-ft": "rearqa.training.chat_task:RagTask",
    "closed-book-ft": "rearqa.training.chat_task:ClosedBookTask",
    "distill": "rearqa.training.distill_task:DistillTask",
    "loraprune": "rearqa.training.loraprune_task:LoRAPruneTask",
}
METHODS = tuple(TASKS)
BASELINES = ("rag-ft", "closed-book-ft")  # trained for a token budget, one LM-loss stage
# Methods whose result is a reader's backbone, not a reader method of its own: a healed
# converted reader is read by whichever reader method loads it (reader.model, or the student dir
# + the adapter), so these are not in rearqa.reader.config.READERS.
BACKBONE_METHODS = ("distill", "loraprune")
# One stage, trained for `token_budget` tokens (or `steps` steps without a budget).
BUDGETED_METHODS = (*BASELINES, *BACKBONE_METHODS)
# distill: what the student trains (rearqa.training.distill_task.trainable_selection).
DISTILL_TRAINABLE = ("attention", "lora", "new")
# distill: where its sequences come from (rearqa.training.data.distill_rows).
DISTILL_DATA = ("corpus", "prompts")
# Training precision, not the reader's weight dtype (rearqa.reader.config.DTYPES). `dtype` is the
# autocast dtype: "auto" means bf16 autocast on CUDA and plain fp32 on CPU. `base_dtype` is the
# frozen base's weight dtype: "auto" means bf16 when training on CUDA under bf16 autocast, else
# fp32. Trainable parameters (LoRA, new token rows, a head module) are fp32 either way.
DTYPES = ("auto", "float32", "bfloat16")
# rear: which judgment tokens after <GENERATE_SCORE> carry LM loss (training.data.rear_inputs).
JUDGMENT_LOSSES = ("balanced", "none", "positives")
TRAIN_SPLIT_SUFFIX = "-dev-train"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Keys that may change between a run and its resumption: where and how often it writes, and
# where it runs. Everything else changes the data, the model or the schedule.
# row_chunks changes how a step is computed, not what (the same losses up to rounding).
# norm_monitor_every only writes norms.jsonl more or less often (norm_probe_rows changes what it
# measures, so a resumed run keeps it).
RESUMABLE_KEYS = ("device", "threads", "out", "save_every", "keep_checkpoints", "log_every",
                  "row_chunks", "norm_monitor_every")


class ConfigMismatchError(ConfigError):
    """`out` holds a run made with other settings; resuming it would mix two runs."""


def check_train_splits(splits: list[str]) -> None:
    """Refuse anything but `*-dev-train` splits: dev-select and test questions are never trained on."""
    for split in splits:
        if not isinstance(split, str) or not split.endswith(TRAIN_SPLIT_SUFFIX):
            raise ConfigError(f"split {split!r} cannot be trained on: only *{TRAIN_SPLIT_SUFFIX} "
                              "splits are (dev-select and test questions are held out), e.g. "
                              "nq-dev-train, tqa-dev-train")


@dataclass
class TrainConfig:
    """One training run; `out` holds its checkpoints, log and final model."""

    method: str = "rear"  # one of METHODS (the TASKS keys): rear | rag-ft | closed-book-ft
    base_model: str = ""  # transformers checkpoint dir; "" = the bundled SmolLM2-135M-Instruct
    snapshot: str = "build/bundle"  # retrieval snapshot dir (rearqa.eval.bundle)
    splits: list[str] = field(  # *-dev-train splits only
        default_factory=lambda: ["nq-dev-train", "tqa-dev-train"])
    max_questions: int = 0  # first N questions of each split; 0 = all
    out: str = "runs/train"  # output dir: train_config.json, train_log.jsonl, checkpoints/, final/

    # -- data (see rearqa.training.data)
    depth: int = 20  # candidates per retriever (dense and BM25 top-depth)
    group_size: int = 8  # passages per question in a REAR group
    agree_top: int = 5  # a positive gains 0.2 for each retriever ranking it in this top
    noise_ratio: float = 1.0  # noise-resistant examples per positive one (at least one per group)
    judgment_loss: str = "balanced"  # rear: balanced (both judgments) | none | positives (REAR's: <RELEVANT> only)
    unanswered_share: float = 1.0  # rear: share of no-positive questions kept (all-negative groups)
    negative_samplings: int = 1  # rear: groups per question, the 2nd... with resampled negatives
    rag_k: int = 3  # rag-ft: dense top-k passages in the prompt
    prompt: str = "short"  # rag-ft / closed-book-ft chat prompt (rearqa.reader.prompts)
    max_passage_words: int = 150  # words per passage, as the readers cut them (rear and rag-ft)
    chat_template: bool = True  # rear: REAR inputs inside the tokenizer's chat template
    question_first: bool = False  # rear: the question before the passage (REAR: passage first)
    rear_head: str = "linear"  # rear: rank head, linear (vLLM-servable) | lowrank_attn
    max_passage_tokens: int = 200  # rear: passage token cut after the word cut (REAR: 300 in all)
    max_question_tokens: int = 64  # rear: question cut
    max_answer_tokens: int = 15  # answer target cut (all methods)

    # -- LoRA (all linear layers except lm_head; embed_tokens frozen but the new REAR rows)
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scale numerator (scale = alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA input
    # the layers the adapter goes on: all-linear (every linear layer but lm_head; embed_tokens is
    # no linear layer), module names such as [q_proj, k_proj, v_proj, o_proj] (attention only),
    # or "" for the method's own default (all-linear; masa: q, k, v, o)
    lora_target: str | list[str] = ""
    adapter: str = "lora"  # LoRA-family method (rearqa.reader.adapters.ADAPTERS): lora | hydra | dvlora | blocklora | masa
    # the method's own settings beyond lora_r / lora_alpha / lora_dropout, e.g. {sequential_r: 8}
    # for hydra or {gate: scalar} for dvlora; turned into its typed settings at once (adapter_settings)
    adapter_options: dict = field(default_factory=dict)

    # -- optimisation
    lr: float = 2e-4  # peak learning rate (AdamW)
    warmup_ratio: float = 0.03  # linear warm-up share of each stage's steps, then cosine to 0
    weight_decay: float = 0.01  # AdamW decay; never on the new token rows, biases or norms
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    batch: int = 4  # groups per micro-batch (rear); the baselines take batch * group_size examples
    grad_accum: int = 2  # micro-batches per optimiser step
    warmup_stage_steps: int = 250  # rear: optimiser steps of stage 1 (rank loss = pointwise BCE)
    steps: int = 2000  # rear: optimiser steps of stage 2 (bi-granularity); baselines: see token_budget
    beta: float = 1.0  # weight of the rank loss against the LM loss
    bce_weight: float = 0.3  # weight of the pointwise BCE inside the bi-granularity loss
    minor_diff: float = 0.1  # smallest graded-label gap that makes a RankNet pair
    neg_weight: float = 1.0  # BCE weight of negative passages (positives weigh 1)
    positive_pair_weight: float = 1.0  # rear: RankNet weight of a pair of two positives (0 = none)
    warmup_rank_only: bool = False  # rear: the warm-up stage trains the rank loss alone (no LM loss)
    # rear, linear head: its own fp32 weight and bias (RearModel.attach_linear_head) at this
    # learning rate, no weight decay; 0 = the head is the <RANK_SCORE> token row at `lr` (REAR's)
    head_lr: float = 0.0
    head_center: bool = False  # rear, own head: subtract the base model's mean score-position state

    # -- distill (a converted reader healed towards its teacher; `batch` = sequences per micro-batch)
    student: str = ""  # distill: converted reader dir (backbone.json); a converted REAR checkpoint too
    teacher: str = "base"  # distill: "base" (base_model) | checkpoint | PEFT adapter | REAR checkpoint dir
    distill_trainable: str = "lora"  # distill: attention | lora (every linear layer) | new (MLA projections)
    distill_data: list[str] = field(default_factory=lambda: ["corpus", "prompts"])  # corpus | prompts
    distill_max_len: int = 512  # distill: tokens per corpus window; prompts are cut to it too
    corpus_windows: int = 2000  # distill: corpus windows built (from the train splits' passages)
    kd_temperature: float = 1.0  # distill: softmax temperature of both sides (KL scaled by T^2)
    kd_chunk: int = 1024  # distill: positions per KL chunk (their (chunk, V) logits live at once)
    # distill, REAR student: weight of the MSE between the student's and the teacher's rank logits
    # on the REAR inputs of the train questions (the vocabulary KL barely constrains the logit)
    rank_mse_weight: float = 1.0

    # -- loraprune (the distill keys above set its data and loss; it trains a LoRA, lora_* keys)
    prune_kv_groups: int = 0  # loraprune: KV heads kept per layer (with their query heads)
    prune_mlp_channels: int = 0  # loraprune: MLP channels kept per layer
    prune_ema: float = 0.9  # loraprune: weight of the running importance against each step's
    prune_start: float = 0.1  # loraprune: fraction of the steps before pruning begins
    prune_end: float = 0.7  # loraprune: fraction of the steps by which the targets are reached
    prune_every: int = 10  # loraprune: steps between pruning steps

    # -- baselines' length
    token_budget: int = 0  # baselines: stop once this many training tokens are seen (0 = use steps)
    token_budget_from: str = ""  # baselines: a REAR run's train_log.jsonl; its last token count

    # -- running
    seed: int = 0  # data order, LoRA init, dropout
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16
    base_dtype: str = "auto"  # frozen base: auto (bf16 under bf16 autocast on CUDA, else fp32) | ...
    row_chunks: int = 1  # forward a micro-batch in N length-sorted chunks: less padding, N x the kernels
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (1 is faster on a busy machine)
    save_every: int = 200  # checkpoint every N optimiser steps (and at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept in out/checkpoints
    log_every: int = 1  # train_log.jsonl record every N steps
    # norms.jsonl: max |X W_Q|, max |X W_K| per layer every N steps, and at 0 and the end (0 = off;
    # rearqa.training.norms), over norm_probe_rows training rows fixed for the run
    norm_monitor_every: int = 0
    norm_probe_rows: int = 8  # rows of the norm monitor's probe, spread over the training rows

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"train.method={self.method!r}: choose one of {list(METHODS)}")
        if isinstance(self.splits, str):
            self.splits = [self.splits]
        if not isinstance(self.splits, list) or not self.splits:
            raise ConfigError(f"train.splits={self.splits!r}: give a list, e.g. [nq-dev-train]")
        check_train_splits(self.splits)
        for name in ("base_model", "snapshot", "out", "token_budget_from", "prompt"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"train.{name}={getattr(self, name)!r}: must be a string")
        self._check_ints()
        self._check_floats()
        self.adapter_settings()  # an unknown method or a bad method setting fails here, named
        for name in ("chat_template", "question_first", "warmup_rank_only", "head_center"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"train.{name}={getattr(self, name)!r}: must be true or false")
        for name in ("dtype", "base_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"train.{name}={getattr(self, name)!r}: choose one of {list(DTYPES)}")
        if not _DEVICE.match(self.device):
            raise ConfigError(f"train.device={self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.judgment_loss not in JUDGMENT_LOSSES:
            raise ConfigError(f"train.judgment_loss={self.judgment_loss!r}: choose one of "
                              f"{list(JUDGMENT_LOSSES)}")
        if self.rear_head not in HEAD_TYPES:
            raise ConfigError(f"train.rear_head={self.rear_head!r}: choose one of {list(HEAD_TYPES)}")
        if (self.head_lr or self.head_center) and self.rear_head != "linear":
            raise ConfigError(f"train.head_lr / head_center are for the linear head's own parameters, "
                              f"not rear_head={self.rear_head!r}")
        if self.head_center and not self.head_lr:
            raise ConfigError("train.head_center needs the head's own parameters: set head_lr, "
                              "e.g. head_lr: 1.0e-3")
        if self.token_budget and self.token_budget_from:
            raise ConfigError("train.token_budget and train.token_budget_from are both set: "
                              "give one (a number, or a REAR run's train_log.jsonl)")
        self._check_distill()
        if self.method == "rear" and (self.token_budget or self.token_budget_from):
            raise ConfigError("train.token_budget / token_budget_from are for the baselines "
                              "(rag-ft, closed-book-ft); a rear run's length is its steps")

    def _check_distill(self) -> None:
        if isinstance(self.distill_data, str):
            self.distill_data = [self.distill_data]
        for name in ("student", "teacher"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"train.{name}={getattr(self, name)!r}: must be a string (a dir)")
        if self.distill_trainable not in DISTILL_TRAINABLE:
            raise ConfigError(f"train.distill_trainable={self.distill_trainable!r}: choose one of "
                              f"{list(DISTILL_TRAINABLE)}")
        if (not isinstance(self.distill_data, list) or not self.distill_data
                or any(d not in DISTILL_DATA for d in self.distill_data)
                or len(set(self.distill_data)) != len(self.distill_data)):
            raise ConfigError(f"train.distill_data={self.distill_data!r}: a list of distinct "
                              f"names from {list(DISTILL_DATA)}, e.g. [corpus, prompts]")
        if self.method == "distill" and not self.student:
            raise ConfigError("train.student is empty: a distill run needs the converted reader "
                              "dir (rearqa convert --out DIR), e.g. --student readers/mla96")
        if self.method == "distill" and not self.teacher:
            raise ConfigError("train.teacher is empty: give base, a checkpoint dir or an adapter dir")
        if self.method in BACKBONE_METHODS and not (self.steps or self.token_budget or self.token_budget_from):
            raise ConfigError("train.steps is 0 and no token budget is set: nothing to train")
        if self.method == "loraprune":
            self._check_loraprune()

    def _check_loraprune(self) -> None:
        from rearqa.reader.backbone.loraprune.config import LoRAPruneConfig

        if self.adapter != "lora":
            raise ConfigError(f"train.adapter={self.adapter!r}: loraprune's importance reads plain "
                              "LoRA's A and B gradients; use adapter: lora")
        if self.distill_trainable != "lora":
            raise ConfigError(f"train.distill_trainable={self.distill_trainable!r}: loraprune trains "
                              "a LoRA (its importance comes from the LoRA's gradients); use lora")
        if self.student:
            raise ConfigError("train.student is set: loraprune prunes the teacher reader itself "
                              "(train.teacher); leave student empty")
        if not (self.prune_kv_groups and self.prune_mlp_channels):
            raise ConfigError("train.prune_kv_groups and train.prune_mlp_channels: give the KV heads "
                              "and MLP channels each layer keeps, e.g. 2 and 1024 for SmolLM2")
        LoRAPruneConfig(kv_groups=self.prune_kv_groups, mlp_channels=self.prune_mlp_channels,
                        ema=self.prune_ema, prune_start=self.prune_start, prune_end=self.prune_end,
                        prune_every=self.prune_every)  # its own checks, with its messages

    def _check_ints(self) -> None:
        positive = ("depth", "group_size", "agree_top", "rag_k", "max_passage_words", "negative_samplings",
                    "max_passage_tokens", "max_question_tokens", "max_answer_tokens", "lora_r",
                    "batch", "grad_accum", "save_every", "keep_checkpoints", "log_every",
                    "row_chunks", "distill_max_len", "kd_chunk", "norm_probe_rows")
        non_negative = ("max_questions", "warmup_stage_steps", "steps", "token_budget", "seed",
                        "threads", "corpus_windows", "norm_monitor_every")
        for name in positive + non_negative:
            value = getattr(self, name)
            low = 1 if name in positive else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"train.{name}={value!r}: must be an integer >= {low}")
        if self.group_size < 2:
            raise ConfigError(f"train.group_size={self.group_size}: a group needs >= 2 passages "
                              "(one positive and one negative make a RankNet pair)")
        if self.method == "rear" and self.warmup_stage_steps + self.steps < 1:
            raise ConfigError("train.warmup_stage_steps + train.steps is 0: nothing to train")

    def _check_floats(self) -> None:
        bounds = {"noise_ratio": (0, None), "unanswered_share": (0, None),
                  "lora_alpha": (0, None), "lora_dropout": (0, 1),
                  "lr": (0, None), "warmup_ratio": (0, 1), "weight_decay": (0, None),
                  "max_grad_norm": (0, None), "beta": (0, None), "bce_weight": (0, None),
                  "minor_diff": (0, None), "neg_weight": (0, None),
                  "positive_pair_weight": (0, None), "head_lr": (0, None),
                  "kd_temperature": (0, None), "rank_mse_weight": (0, None)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            ok = (not isinstance(value, bool) and isinstance(value, (int, float))
                  and math.isfinite(value) and value >= low and (high is None or value < high))
            if not ok:
                span = f">= {low}" + (f" and < {high}" if high is not None else "")
                raise ConfigError(f"train.{name}={value!r}: must be a finite number {span}")
        if self.unanswered_share > 1:
            raise ConfigError(f"train.unanswered_share={self.unanswered_share}: a share, 0 to 1")
        if self.kd_temperature == 0:
            raise ConfigError("train.kd_temperature=0: must be > 0, e.g. kd_temperature: 1.0")
        if self.lr == 0:
            raise ConfigError("train.lr=0: nothing would be learned; e.g. lr: 2.0e-4")

    # ------------------------------------------------------------------ derived settings
    def adapter_settings(self):
        """The typed settings of `adapter`: lora_r / lora_alpha / lora_dropout plus adapter_options."""
        from rearqa.reader.adapters import get_adapter

        if not isinstance(self.adapter, str):
            raise ConfigError(f"train.adapter={self.adapter!r}: give a method name, e.g. adapter: hydra")
        if not isinstance(self.adapter_options, dict):
            raise ConfigError(f"train.adapter_options={self.adapter_options!r}: give a mapping of "
                              "the method's settings, e.g. {sequential_r: 8}")
        settings_cls = get_adapter(self.adapter).config_cls
        shared = {"r", "alpha", "dropout", "target"}
        known = {f.name for f in fields(settings_cls)} - shared
        unknown = sorted(set(self.adapter_options) - known)
        if unknown:
            raise ConfigError(f"train.adapter_options: {unknown} are not {self.adapter} settings; "
                              f"it takes {sorted(known)} (rank, alpha, dropout and target are "
                              "lora_r, lora_alpha, lora_dropout and lora_target)")
        target = {"target": self.lora_target} if self.lora_target else {}
        return settings_cls(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                            **target, **self.adapter_options)


    @property
    def is_baseline(self) -> bool:
        return self.method in BASELINES

    @property
    def one_stage(self) -> bool:
        """Trained in one stage, for a token budget or `steps` (BUDGETED_METHODS)."""
        return self.method in BUDGETED_METHODS

    @property
    def total_steps(self) -> int:
        """Optimiser steps of a rear run, or of a baseline without a token budget (distill:
        `steps`, its one stage)."""
        if self.method in BACKBONE_METHODS:
            return self.steps
        return self.warmup_stage_steps + self.steps

    def base_model_dir(self) -> Path:
        if self.base_model:
            return Path(self.base_model).expanduser()
        from rearqa.assets import reader_model_dir

        return reader_model_dir()

    def to_dict(self) -> dict[str, Any]:
        from rearqa.config_base import to_dict

        return to_dict(self)

    @classmethod
    def from_yaml(cls, path: str | Path | None, **overrides: Any) -> "TrainConfig":
        """Settings from a YAML mapping (its top level, or its `train:` section), then overrides.

        Overrides whose value is None are ignored (unset command-line options).
        """
        from rearqa.config_base import from_dict, read_yaml

        data: dict[str, Any] = {}
        where = "train"
        if path is not None:
            path = Path(path)
            data = read_yaml(path)
            data = data.get("train", data) if set(data) == {"train"} else data
            where = path.name
        data.update({k: v for k, v in overrides.items() if v is not None})
        return from_dict(cls, data, where)


# An adapter recipe (configs/adapters/<name>.yaml) sets these keys and no others: which method,
# its settings, rank, scale, dropout and target layers; the run's own file says the rest.
RECIPE_KEYS = ("adapter", "adapter_options", "lora_r", "lora_alpha", "lora_dropout", "lora_target")


def recipes_dir() -> Path:
    from rearqa.environment import repo_root

    return repo_root() / "configs" / "adapters"


def read_adapter_recipe(ref: str | Path) -> dict[str, Any]:
    """The settings of adapter recipe `ref`: a name in configs/adapters/ (e.g. lora-attention) or
    a YAML file path. A key outside RECIPE_KEYS is refused: a recipe says how to adapt, not what
    to train on."""
    from rearqa.config_base import read_yaml

    path = Path(ref)
    if not path.suffix:
        path = recipes_dir() / f"{ref}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in recipes_dir().glob("*.yaml"))
        raise ConfigError(f"adapter recipe {str(ref)!r}: no file {path}; the recipes are {names}, "
                          "or give a YAML path")
    data = read_yaml(path)
    extra = sorted(set(data) - set(RECIPE_KEYS))
    if extra:
        raise ConfigError(f"adapter recipe {path.name}: {extra} are not recipe keys; a recipe sets "
                          f"only {list(RECIPE_KEYS)} (put the others in the run's --config)")
    return data


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Setting names whose values differ, ignoring RESUMABLE_KEYS. A setting added after the run
    was saved (absent from `saved`) differs only when it is not at its default."""
    defaults = TrainConfig().to_dict()
    keys = (set(saved) | set(current)) - set(RESUMABLE_KEYS)
    return sorted(k for k in keys if saved.get(k, defaults.get(k)) != current.get(k))
