"""The training loop for REAR and its fine-tuned baselines: plain PyTorch, resumable, pickle-free.

REAR (Wang et al., 2024; shared/papers/REAR-and-RAG-toolkits.md) trains one LLM to judge and to
answer. A step takes B question groups (rearqa.training.data) and runs ONE forward pass over
their B x group_size REAR inputs `{passage}<BEGIN_QUERY>{question}<GENERATE_SCORE>[judgment
answer]`: the rank logits are read at <GENERATE_SCORE> and the LM loss on the answers comes from
the same pass (RearModel.forward). Loss = LM + beta * rank, where rank is pointwise BCE in the
warm-up stage (REAR's stage 1) and the bi-granularity loss afterwards (stage 2). Each stage has
its own linear warm-up and cosine decay, as REAR's two runs had.

The baselines (rag-ft, closed-book-ft) fine-tune the plain model with the same LoRA recipe on
the same questions, LM loss on the answer only, until they have seen `token_budget` training
tokens (the REAR run's count). Training tokens = non-pad input tokens of every sequence in a
step, scoring-only REAR rows included: the compute spent.

Output under `out`:

    train_config.json   the TrainConfig; a restart with other settings is refused
    plan.json           steps, stages, token budget and a digest of the training questions
    data_stats.json     what the data builder produced
    train_log.jsonl     one record per step: step, stage, loss, lm, rank, lr, grad_norm, tokens,
                        seconds, epoch
    checkpoints/step-N/ model/ (loadable, as final/), trainable.safetensors, optimizer.safetensors
                        + optimizer.json, scheduler.json, rng.safetensors + rng.json,
                        trainer_state.json: safetensors and JSON only, never pickle
    final/              rear: RearModel.from_pretrained(out/final, base_model_dir)
                        baselines: a PEFT adapter + tokenizer, loaded with
                        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out/final)
    summary.json        written last: steps, tokens, seconds, tokens/s (the run is complete)

Started again with the same config, `train` resumes from the newest checkpoint: parameters,
optimiser moments, schedule, RNG streams and data position (the data order is a function of the
seed and the step, so it needs no state). Of the retriever this path imports only its settings
(pure Python, through rearqa.config), never faiss, BM25 or the pipeline, so it runs on a machine
that has only torch, transformers, peft, numpy, tqdm and pyyaml.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.training.config import ConfigMismatchError, TrainConfig, config_differences

LOG_FILE, CONFIG_FILE, PLAN_FILE, STATS_FILE, SUMMARY_FILE = (
    "train_log.jsonl", "train_config.json", "plan.json", "data_stats.json", "summary.json")
CHECKPOINTS, FINAL = "checkpoints", "final"
CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------------------- schedule and order

def stages(config: TrainConfig, total_steps: int) -> list[dict]:
    """[{name, start, steps}]: rear has warmup (pointwise BCE) then main; a baseline one stage."""
    if config.is_baseline:
        return [{"name": "lm", "start": 0, "steps": total_steps}]
    parts = [("warmup", config.warmup_stage_steps), ("main", config.steps)]
    out, start = [], 0
    for name, steps in parts:
        if steps:
            out.append({"name": name, "start": start, "steps": steps})
            start += steps
    return out


def stage_at(plan_stages: list[dict], step: int) -> dict:
    """The stage that optimiser step `step` (0-based) belongs to."""
    return next(s for s in reversed(plan_stages) if step >= s["start"])


def lr_factor(plan_stages: list[dict], warmup_ratio: float, step: int) -> float:
    """Linear warm-up over warmup_ratio of the stage, then cosine to 0 at the stage's end."""
    stage = stage_at(plan_stages, step)
    t, length = step - stage["start"], stage["steps"]
    warm = math.ceil(warmup_ratio * length)
    if t < warm:
        return (t + 1) / (warm + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (t - warm) / max(1, length - warm)))


class DataOrder:
    """Item indices for any position of an endless stream of seeded epoch permutations."""

    def __init__(self, n_items: int, seed: int) -> None:
        if n_items < 1:
            raise ConfigError("no training examples: check train.splits and train.max_questions")
        self.n, self.seed, self._perms = n_items, seed, {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            perm = list(range(self.n))
            random.Random(f"{self.seed}:epoch:{epoch}").shuffle(perm)
            self._perms = {epoch: perm}  # one epoch is live at a time
        return self._perms[epoch]

    def take(self, start: int, count: int) -> list[int]:
        return [self._perm(p // self.n)[p % self.n] for p in range(start, start + count)]


def plan_budget(order: DataOrder, lengths: list[int], per_micro: int, accum: int, budget: int) -> int:
    """Optimiser steps until the cumulative token count first reaches `budget`."""
    tokens, pos, steps = 0, 0, 0
    while tokens < budget:
        for _ in range(accum):
            tokens += sum(lengths[i] for i in order.take(pos, per_micro))
            pos += per_micro
        steps += 1
    return steps


def budget_from_log(path: str | Path) -> int:
    """The token count of a finished REAR run's train_log.jsonl (its last record)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token_budget_from={path}: no such train_log.jsonl")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"token_budget_from={path}: the log is empty")
    last = json.loads(lines[-1])
    plan = path.parent / PLAN_FILE
    if plan.is_file():
        total = json.loads(plan.read_text())["total_steps"]
        if last["step"] < total:
            raise ConfigError(f"token_budget_from={path}: that run stopped at step {last['step']} "
                              f"of {total}; finish it, or give token_budget as a number")
    return int(last["tokens"])


def rear_groups(config: TrainConfig, snapshot) -> list:
    """The REAR training groups of `config` (rearqa.training.data.build_groups)."""
    from rearqa.training.data import build_groups

    return build_groups(snapshot, config.splits, config.group_size, config.depth, config.seed,
                        config.max_questions or None, config.agree_top, config.unanswered_share)


def rear_input_options(config: TrainConfig) -> dict:
    """How `config` turns a group into REAR inputs (rear_inputs / rear_batch keywords)."""
    return dict(use_chat_template=config.chat_template, noise_ratio=config.noise_ratio,
                max_passage_words=config.max_passage_words,
                max_passage_tokens=config.max_passage_tokens,
                max_question_tokens=config.max_question_tokens,
                max_answer_tokens=config.max_answer_tokens)


def rear_token_count(config: TrainConfig, steps: list[int] | None = None) -> dict[int, int]:
    """Training tokens a rear run of `config` will have seen after each of `steps` (default:
    its last step), computed from the data and the tokenizer alone (no model), in the run's own
    data order: the budget that the baselines (rag-ft, closed-book-ft) are given so they can
    train side by side with it."""
    from transformers import AutoTokenizer

    from rearqa.eval.bundle import Snapshot
    from rearqa.reader.rear.tokens import add_rear_tokens
    from rearqa.training.data import rear_inputs

    if config.method != "rear":
        raise ConfigError("rear_token_count counts a rear run's tokens")
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_dir())
    add_rear_tokens(tokenizer)
    groups = rear_groups(config, Snapshot(config.snapshot))
    lengths = [sum(len(x.input_ids) for x in rear_inputs(g, tokenizer, **rear_input_options(config)))
               for g in groups]
    order, per_step = DataOrder(len(groups), config.seed), config.batch * config.grad_accum
    wanted = sorted(set(steps or [config.total_steps]))
    counts, tokens = {}, 0
    for step in range(1, wanted[-1] + 1):
        tokens += sum(lengths[i] for i in order.take((step - 1) * per_step, per_step))
        if step in wanted:
            counts[step] = tokens
    return counts


# ---------------------------------------------------------------------------- pickle-free state

def _save_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_optimizer(opt: torch.optim.Optimizer, names: list[str], directory: Path) -> None:
    """Moments as safetensors keyed by parameter name; hyper-parameters and scalars as JSON."""
    from safetensors.torch import save_file

    state = opt.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            target = tensors if torch.is_tensor(value) else scalars
            target[f"{names[index]}::{key}"] = (value.detach().cpu().contiguous()
                                                if torch.is_tensor(value) else value)
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    save_file(tensors, directory / "optimizer.safetensors")
    _save_json(directory / "optimizer.json", {"param_groups": groups, "scalars": scalars})


def load_optimizer(opt: torch.optim.Optimizer, names: list[str], directory: Path) -> None:
    from safetensors.torch import load_file

    meta = json.loads((directory / "optimizer.json").read_text())
    index = {name: i for i, name in enumerate(names)}
    saved = [n for g in meta["param_groups"] for n in g["params"]]
    if sorted(saved) != sorted(names):
        raise ConfigMismatchError(f"{directory}: the checkpoint's optimiser covers other "
                                  f"parameters ({len(saved)} saved, {len(names)} now)")
    state: dict[int, dict] = {}
    for key, value in [*load_file(directory / "optimizer.safetensors").items(),
                       *meta["scalars"].items()]:
        name, _, field = key.rpartition("::")
        state.setdefault(index[name], {})[field] = value
    groups = [{**g, "params": [index[n] for n in g["params"]],
               **({"betas": tuple(g["betas"])} if "betas" in g else {})}
              for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_rng(directory: Path) -> None:
    import numpy as np
    from safetensors.torch import save_file

    np_state = np.random.get_state()
    tensors = {"torch_cpu": torch.get_rng_state(),
               "numpy_keys": torch.from_numpy(np_state[1].astype("int64"))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    version, internal, gauss = random.getstate()
    save_file(tensors, directory / "rng.safetensors")
    _save_json(directory / "rng.json", {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]})


def load_rng(directory: Path) -> None:
    import numpy as np
    from safetensors.torch import load_file

    tensors = load_file(directory / "rng.safetensors")
    meta = json.loads((directory / "rng.json").read_text())
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["torch_cuda"]))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype("uint32"), pos, has_gauss,
                         cached))


def save_checkpoint(out: Path, step: int, task, opt, sched, trainer_state: dict, keep: int) -> Path:
    """Write checkpoints/step-N atomically (a .tmp dir renamed at the end), keep the newest `keep`."""
    from safetensors.torch import save_file

    root = out / CHECKPOINTS
    final, tmp = root / f"step-{step:07d}", root / f"step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    task.save_model(tmp / "model")
    params = trainable_parameters(task.model)
    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()},
              tmp / "trainable.safetensors")
    save_optimizer(opt, task.param_names, tmp)
    _save_json(tmp / "scheduler.json", sched.state_dict())
    save_rng(tmp)
    _save_json(tmp / "trainer_state.json", {"format": CHECKPOINT_FORMAT, **trainer_state})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(out)[:-keep] + list(root.glob("step-*.tmp")):  # + crashed writes
        shutil.rmtree(old)
    return final


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = out / CHECKPOINTS
    found = [p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
             and (p / "trainer_state.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(directory: Path, task, opt, sched) -> dict:
    from safetensors.torch import load_file

    saved = load_file(directory / "trainable.safetensors")
    params = trainable_parameters(task.model)
    if set(saved) != set(params):
        diff = sorted(set(saved) ^ set(params))[:5]
        raise ConfigMismatchError(f"{directory}: trainable parameters differ from this model's, "
                                  f"e.g. {diff}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])
    load_optimizer(opt, task.param_names, directory)
    sched.load_state_dict(json.loads((directory / "scheduler.json").read_text()))
    load_rng(directory)
    return json.loads((directory / "trainer_state.json").read_text())


# ---------------------------------------------------------------------------- what is trained

class RearTask:
    """REAR: groups of passages per question, one forward pass for rank and LM losses."""

    def __init__(self, config: TrainConfig, snapshot, tokenizer, lm, device: torch.device) -> None:
        from rearqa.reader.rear import RearConfig, RearModel, add_lora
        from rearqa.reader.rear.lora import no_decay_parameter_names
        from rearqa.training.data import group_stats

        self.config = config
        self.groups = rear_groups(config, snapshot)
        self.stats = group_stats(self.groups, config.noise_ratio)
        rear = RearConfig(head=config.rear_head, use_chat_template=config.chat_template)
        model = RearModel.from_base(lm, tokenizer, rear, base_model_dir=config.base_model_dir())
        self.model = add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout).to(device)
        self.tokenizer = tokenizer
        self.no_decay_names = no_decay_parameter_names(self.model)
        self.n_items, self.items_per_micro = len(self.groups), config.batch
        self.item_ids = [g.id for g in self.groups]

    def batch(self, indices: list[int], device: torch.device) -> dict:
        from rearqa.training.data import rear_batch

        batch = rear_batch([self.groups[i] for i in indices], self.tokenizer,
                           **rear_input_options(self.config))
        return {k: v.to(device) for k, v in batch.items()}

    def losses(self, batch: dict, stage: str) -> dict:
        from rearqa.training.losses import RearLossConfig, compute_rear_loss, rear_lm_loss_and_rank

        c = self.config
        passage_mask = batch["passage_mask"] if self.model.rank_head is not None else None
        lm, rank = rear_lm_loss_and_rank(self.model, batch["input_ids"], batch["attention_mask"],
                                         batch["labels"], passage_mask)
        loss_config = RearLossConfig(beta=c.beta, fine=stage == "main", bce_weight=c.bce_weight,
                                     minor_diff=c.minor_diff, neg_weight=c.neg_weight)
        return compute_rear_loss(None, batch["labels"], rank, batch["grades"], batch["group_ids"],
                                 loss_config, lm=lm)

    def save_model(self, path: Path) -> None:
        self.model.save_pretrained(path)


class ChatLMTask:
    """rag-ft / closed-book-ft: the plain chat prompt, LM loss on the answer alone."""

    def __init__(self, config: TrainConfig, snapshot, tokenizer, lm, device: torch.device) -> None:
        from peft import LoraConfig, get_peft_model

        from rearqa.training.data import closed_book_examples, encode_chat_example, rag_examples

        common = dict(depth=config.depth, max_questions=config.max_questions or None,
                      prompt=config.prompt)
        examples = (rag_examples(snapshot, config.splits, k=config.rag_k,
                                 max_passage_words=config.max_passage_words, **common)
                    if config.method == "rag-ft" else
                    closed_book_examples(snapshot, config.splits, **common))
        self.encoded = [encode_chat_example(tokenizer, ex, config.max_answer_tokens)
                        for ex in examples]
        lengths = self.lengths()
        self.stats = {"questions": len(examples), "mean_tokens": sum(lengths) / max(1, len(lengths)),
                      "max_tokens": max(lengths, default=0)}
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout, target_modules="all-linear",
                          task_type="CAUSAL_LM")
        self.model = get_peft_model(lm, lora).to(device)
        self.tokenizer = tokenizer
        self.no_decay_names: list[str] = []
        self.n_items = len(examples)
        self.items_per_micro = config.batch * config.group_size  # as many sequences as rear
        self.item_ids = [ex.id for ex in examples]

    def lengths(self) -> list[int]:
        return [len(ids) for ids, _ in self.encoded]

    def batch(self, indices: list[int], device: torch.device) -> dict:
        from rearqa.training.data import chat_batch, pad_id

        batch = chat_batch([self.encoded[i] for i in indices], pad_id(self.tokenizer))
        return {k: v.to(device) for k, v in batch.items()}

    def losses(self, batch: dict, stage: str) -> dict:
        from rearqa.training.losses import lm_loss_at_labels

        lm_model = self.model.get_base_model()  # the causal LM with the LoRA layers in it
        hidden = lm_model.get_decoder()(input_ids=batch["input_ids"],
                                        attention_mask=batch["attention_mask"]).last_hidden_state
        lm = lm_loss_at_labels(hidden, lm_model.get_output_embeddings(), batch["labels"])
        return {"loss": lm, "lm": lm, "rank": torch.zeros(())}

    def save_model(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


def build_task(config: TrainConfig, device: torch.device):
    """Load the snapshot, the tokenizer and the base model (fp32), and build the method's task."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearqa.eval.bundle import Snapshot

    base = config.base_model_dir()
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"train.base_model={str(base)!r} is not a transformers checkpoint "
                                "(no config.json); run `rearqa data prepare` for the bundled model")
    snapshot = Snapshot(config.snapshot)
    tokenizer = AutoTokenizer.from_pretrained(base)
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    task_class = RearTask if config.method == "rear" else ChatLMTask
    return task_class(config, snapshot, tokenizer, lm, device)


# ---------------------------------------------------------------------------- set-up

def resolve_device(config: TrainConfig) -> tuple[torch.device, torch.dtype | None]:
    """The device, and the autocast dtype (None = plain fp32)."""
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={config.device!r} but CUDA is not available; use cpu")
    device = torch.device(name)
    wants_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda")
    return device, (torch.bfloat16 if wants_bf16 else None)


def _check_config(config: TrainConfig, out: Path) -> None:
    path = out / CONFIG_FILE
    current = config.to_dict()
    if path.is_file():
        diff = config_differences(json.loads(path.read_text()), current)
        if diff:
            raise ConfigMismatchError(f"{out} holds a run with other settings ({', '.join(diff)} "
                                      "differ); use another --out, or the same settings to resume")
    _save_json(path, current)


def _check_plan(out: Path, plan: dict) -> None:
    path = out / PLAN_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
        if diff:
            raise ConfigMismatchError(f"{out} was planned differently ({', '.join(diff)} differ: "
                                      "the snapshot or the budget's log changed); use another --out")
    _save_json(path, plan)


def make_optimizer(task, config: TrainConfig):
    """AdamW with no decay on the new token rows (stored by value), biases and norms."""
    no_decay = set(task.no_decay_names)
    params = trainable_parameters(task.model)
    decay = [n for n, p in params.items() if n not in no_decay and p.dim() >= 2]
    rest = [n for n in params if n not in set(decay)]
    task.param_names = decay + rest  # optimiser index -> parameter name, for checkpoints
    groups = [{"params": [params[n] for n in decay], "weight_decay": config.weight_decay},
              {"params": [params[n] for n in rest], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- the loop

def train(config: TrainConfig, progress: bool = False, stop_after_steps: int | None = None,
          time_limit_s: float | None = None, echo=print) -> Path:
    """Train (or resume) the run of `config`; returns out/final, or the newest checkpoint when
    `stop_after_steps` steps or `time_limit_s` seconds of this call ran out first."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(config, out)
    if (out / SUMMARY_FILE).is_file() and (out / FINAL).is_dir():
        echo(f"{out} is already trained; final model in {out / FINAL}")
        return out / FINAL
    device, amp = resolve_device(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # LoRA initialisation and dropout
    random.seed(config.seed)
    task = build_task(config, device)
    _save_json(out / STATS_FILE, task.stats)
    order = DataOrder(task.n_items, config.seed)
    per_micro = task.items_per_micro
    budget = config.token_budget or (budget_from_log(config.token_budget_from)
                                     if config.token_budget_from else 0)
    total = (plan_budget(order, task.lengths(), per_micro, config.grad_accum, budget)
             if budget else config.total_steps)
    plan_stages = stages(config, total)
    _check_plan(out, {"total_steps": total, "token_budget": budget, "stages": plan_stages,
                      "items": task.n_items, "data_digest": _digest(task.item_ids)})
    opt = make_optimizer(task, config)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(plan_stages, config.warmup_ratio, min(s, total - 1)))
    state = {"step": 0, "tokens": 0, "seconds": 0.0}
    found = checkpoints(out)
    if found:
        state = load_checkpoint(found[-1], task, opt, sched)
        echo(f"resuming {out} at step {state['step']} of {total} ({state['tokens']} tokens)")
    final = out / FINAL
    _truncate_log(out / LOG_FILE, state["step"])
    result = _loop(config, task, order, opt, sched, plan_stages, total, state, device, amp, out,
                   progress, stop_after_steps, time_limit_s, echo)
    if state["step"] < total:
        return result
    shutil.rmtree(final, ignore_errors=True)
    task.save_model(final)
    _save_json(out / SUMMARY_FILE, {
        "method": config.method, "steps": total, "tokens": state["tokens"],
        "seconds": round(state["seconds"], 3),
        "tokens_per_s": round(state["tokens"] / max(state["seconds"], 1e-9), 1),
        "token_budget": budget, "final": FINAL})
    return final


def _truncate_log(path: Path, step: int) -> None:
    """Drop records after the resumed step (they are about to be redone)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _optimizer_step(task, order, opt, sched, params, config, step: int, stage: str, device,
                    autocast) -> tuple[dict, float, float, int]:
    """One optimiser step over `grad_accum` micro-batches: (mean losses, grad norm, lr, tokens)."""
    per_micro, accum = task.items_per_micro, config.grad_accum
    parts = {"loss": 0.0, "lm": 0.0, "rank": 0.0}
    tokens = 0
    for micro in range(accum):
        batch = task.batch(order.take((step * accum + micro) * per_micro, per_micro), device)
        with autocast():
            losses = task.losses(batch, stage)
        (losses["loss"] / accum).backward()
        for key in parts:
            parts[key] += float(losses[key].detach()) / accum
        tokens += int(batch["attention_mask"].sum())
    grad_norm = (float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
                 if config.max_grad_norm > 0 else float("nan"))
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return parts, grad_norm, lr, tokens


def _loop(config, task, order, opt, sched, plan_stages, total, state, device, amp, out, progress,
          stop_after_steps, time_limit_s, echo) -> Path:
    """Steps until `total` (or the call's step / time limit); log, checkpoint, report throughput."""
    from tqdm import tqdm

    params = list(trainable_parameters(task.model).values())
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else nullcontext
    started, start_step, start_tokens = time.perf_counter(), state["step"], state["tokens"]
    base_seconds, last_ckpt = state["seconds"], None
    bar = tqdm(total=total, initial=start_step, disable=not progress, unit="step",
               desc=f"train {config.method}")
    task.model.train()
    with (out / LOG_FILE).open("a") as log:
        while state["step"] < total:
            stage = stage_at(plan_stages, state["step"])["name"]
            parts, grad_norm, lr, tokens = _optimizer_step(task, order, opt, sched, params, config,
                                                           state["step"], stage, device, autocast)
            elapsed = time.perf_counter() - started
            state.update(step=state["step"] + 1, tokens=state["tokens"] + tokens,
                         seconds=base_seconds + elapsed)
            if state["step"] % config.log_every == 0 or state["step"] == total:
                epoch = state["step"] * config.grad_accum * task.items_per_micro / task.n_items
                log.write(json.dumps({"step": state["step"], "stage": stage,
                                      **{k: round(v, 6) for k, v in parts.items()}, "lr": lr,
                                      "grad_norm": round(grad_norm, 6), "tokens": state["tokens"],
                                      "seconds": round(state["seconds"], 3),
                                      "epoch": round(epoch, 4)}) + "\n")
                log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}",
                            tok_s=f"{(state['tokens'] - start_tokens) / max(elapsed, 1e-9):.0f}")
            ran = state["step"] - start_step
            stopping = ((stop_after_steps is not None and ran >= stop_after_steps)
                        or (time_limit_s is not None and elapsed >= time_limit_s))
            if state["step"] % config.save_every == 0 or state["step"] == total or stopping:
                last_ckpt = save_checkpoint(out, state["step"], task, opt, sched, dict(state),
                                            config.keep_checkpoints)
            if stopping:
                break
    bar.close()
    _report_throughput(config, state, start_step, start_tokens, time.perf_counter() - started,
                       total, device, echo)
    return last_ckpt or out


def _report_throughput(config, state, start_step, start_tokens, elapsed, total, device, echo):
    ran, tokens = state["step"] - start_step, state["tokens"] - start_tokens
    if not ran:
        return
    peak = (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
            if device.type == "cuda" else "")
    echo(f"{config.method}: {ran} steps, {tokens} tokens in {elapsed:.1f} s: "
         f"{tokens / elapsed:.0f} tokens/s, {elapsed / ran:.2f} s/step "
         f"(step {state['step']} of {total}){peak}")
