"""The training loop for REAR and its fine-tuned baselines: plain PyTorch, resumable, pickle-free.

What is trained is the method's task, registered in rearqa.training.config.TASKS: `RearTask`
(rearqa.training.rear_task: rank and LM losses from one pass over passage groups) or `RagTask` /
`ClosedBookTask` (rearqa.training.chat_task: LM loss on the answer) or `DistillTask`
(rearqa.training.distill_task: a converted reader healed towards its source). A task holds the
LoRA-wrapped `model`, its data `stats`, `n_items` training items (`item_ids`) taken
`items_per_micro` per micro-batch, the parameters kept out of weight decay (`no_decay_names`),
and makes `batch(indices, device)`, `losses(batch, stage)` -> {"loss", "lm", "rank"} and
`save_model(path)`; a baseline's `lengths()` (tokens per item) plans its token budget. A task
that acts around the optimiser step (loraprune) has `plan_steps(total)`, `after_backward()` (the
step's gradients complete, rearqa.training.step) and `after_step(step)`, and keeps state of its
own in the checkpoints (`state_tensors`, `state_json`, `load_state`: rearqa.training.checkpoint). A task
tokenises its data when it is built; a batch is rows collated into chunks on the device, with
their token counts known on the host (rearqa.training.data.token_rows.StepRows). A task may add
AdamW parameter groups of its own (`extra_param_groups`, see `make_optimizer`). The loop is the
same for every task: AdamW, each stage's warm-up and cosine decay (rearqa.training.schedule),
gradient accumulation and clipping, autocast, log and checkpoints. A step makes no host sync
(rearqa.training.step): the host reads the losses on the steps it logs only. Precision:
rearqa.training.precision (the frozen base in bf16 on CUDA, what trains in fp32).

REAR trains for `warmup_stage_steps + steps` steps. The baselines (rag-ft, closed-book-ft)
train until they have seen `token_budget` training tokens (the REAR run's count). Training
tokens = non-pad input tokens of every sequence in a step, scoring-only REAR rows included: the
compute spent. What a run writes under `out` is listed in rearqa.training.run_files.

Started again with the same config, `train` resumes from the newest checkpoint
(rearqa.training.checkpoint): parameters, optimiser moments, schedule, RNG streams and data
position (the data order is a function of the seed and the step, so it needs no state). Of the
retriever this path imports only its settings (pure Python, through rearqa.config), never
faiss, BM25 or the pipeline, so it runs on a machine that has only torch, transformers, peft,
numpy, tqdm and pyyaml.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write_text
from rearqa.registry import resolve
from rearqa.training.checkpoint import (checkpoints, load_checkpoint, save_checkpoint,
                                        trainable_parameters)
from rearqa.training.config import TASKS, ConfigMismatchError, TrainConfig, config_differences
# resolve_device is re-exported: it lived here.
from rearqa.training.precision import (autocast_dtype, keep_trainable_fp32, resolve_base_dtype,
                                       resolve_device)
# rear_token_count is re-exported: `rearqa train rear --count-tokens` imports it from here.
from rearqa.training.rear_task import rear_token_count as rear_token_count
from rearqa.training.run_files import (CONFIG_FILE, FINAL, LOG_FILE, PLAN_FILE, STATS_FILE,
                                       SUMMARY_FILE, save_json, truncate_records)
from rearqa.training.schedule import (DataOrder, budget_from_log, lr_factor, plan_budget, stage_at,
                                      stages)
from rearqa.training.step import LOSS_KEYS, optimizer_step


# ---------------------------------------------------------------------------- what is trained

def build_task(config: TrainConfig, device: torch.device):
    """Load the snapshot, the tokenizer and the base model (in `resolve_base_dtype`), build the
    method's task (which tokenises its data), and keep what trains in fp32. A task class with a
    `build(config, snapshot, device, dtype)` classmethod loads its models itself."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearqa.eval.bundle import Snapshot

    task_class = resolve(TASKS, config.method, "training method", error=ConfigError)
    dtype = resolve_base_dtype(config, device, autocast_dtype(config, device))
    if hasattr(task_class, "build"):  # a task that loads its own models (distill: two of them)
        task = task_class.build(config, Snapshot(config.snapshot), device, dtype)
        keep_trainable_fp32(task.model)
        return task
    base = config.base_model_dir()
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"train.base_model={str(base)!r} is not a transformers checkpoint "
                                "(no config.json); run `rearqa data prepare` for the bundled model")
    snapshot = Snapshot(config.snapshot)
    tokenizer = AutoTokenizer.from_pretrained(base)
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    task = task_class(config, snapshot, tokenizer, lm, device)
    keep_trainable_fp32(task.model)
    return task


# ---------------------------------------------------------------------------- set-up

def _check_config(config: TrainConfig, out: Path) -> None:
    path = out / CONFIG_FILE
    current = config.to_dict()
    if path.is_file():
        diff = config_differences(json.loads(path.read_text()), current)
        if diff:
            raise ConfigMismatchError(f"{out} holds a run with other settings ({', '.join(diff)} "
                                      "differ); use another --out, or the same settings to resume")
    save_json(path, current)


def _check_plan(out: Path, plan: dict) -> None:
    path = out / PLAN_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
        if diff:
            raise ConfigMismatchError(f"{out} was planned differently ({', '.join(diff)} differ: "
                                      "the snapshot or the budget's log changed); use another --out")
    save_json(path, plan)


def make_optimizer(task, config: TrainConfig):
    """AdamW with no decay on the new token rows (stored by value), biases and norms.

    A task may add groups of its own: `task.extra_param_groups(config)` -> [{"names": [...],
    and any AdamW group setting, e.g. "lr", "weight_decay"}]; the parameters it names leave the
    two default groups. On CUDA the fused AdamW kernel steps every parameter at once."""
    params = trainable_parameters(task.model)
    extra = task.extra_param_groups(config) if hasattr(task, "extra_param_groups") else []
    taken = {n for g in extra for n in g["names"]}
    no_decay = set(task.no_decay_names)
    decay = [n for n, p in params.items() if n not in taken | no_decay and p.dim() >= 2]
    rest = [n for n in params if n not in taken and n not in set(decay)]
    groups = [{"names": decay, "weight_decay": config.weight_decay},
              {"names": rest, "weight_decay": 0.0}] + extra
    task.param_names = [n for g in groups for n in g["names"]]  # optimiser index -> name
    fused = bool(params) and all(p.is_cuda for p in params.values())
    return torch.optim.AdamW(
        [{**{k: v for k, v in g.items() if k != "names"}, "params": [params[n] for n in g["names"]]}
         for g in groups], lr=config.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


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
    save_json(out / STATS_FILE, task.stats)
    order = DataOrder(task.n_items, config.seed)
    per_micro = task.items_per_micro
    budget = config.token_budget or (budget_from_log(config.token_budget_from)
                                     if config.token_budget_from else 0)
    total = (plan_budget(order, task.lengths(), per_micro, config.grad_accum, budget)
             if budget else config.total_steps)
    plan_stages = stages(config, total)
    _check_plan(out, {"total_steps": total, "token_budget": budget, "stages": plan_stages,
                      "items": task.n_items, "data_digest": _digest(task.item_ids)})
    if hasattr(task, "plan_steps"):  # a task that schedules by step (loraprune's pruning)
        task.plan_steps(total)
    opt = make_optimizer(task, config)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(plan_stages, config.warmup_ratio, min(s, total - 1)))
    state = {"step": 0, "tokens": 0, "seconds": 0.0}
    found = checkpoints(out)
    if found:
        state = load_checkpoint(found[-1], task, opt, sched)
        echo(f"resuming {out} at step {state['step']} of {total} ({state['tokens']} tokens)")
    final = out / FINAL
    truncate_records(out / LOG_FILE, state["step"])  # the records after the checkpoint are redone
    monitor = None
    if config.norm_monitor_every:  # rearqa.training.norms: max |X W_Q|, max |X W_K| per layer
        from rearqa.training.norms import NormMonitor

        monitor = NormMonitor(task, config, out, device, amp, total)
        monitor.start(state["step"])
    result = _loop(config, task, order, opt, sched, plan_stages, total, state, device, amp, out,
                   progress, stop_after_steps, time_limit_s, echo, monitor)
    if state["step"] < total:
        return result
    shutil.rmtree(final, ignore_errors=True)
    task.save_model(final)
    save_json(out / SUMMARY_FILE, {
        "method": config.method, "steps": total, "tokens": state["tokens"],
        "seconds": round(state["seconds"], 3),
        "tokens_per_s": round(state["tokens"] / max(state["seconds"], 1e-9), 1),
        "token_budget": budget, "final": FINAL})
    return final


def _loop(config, task, order, opt, sched, plan_stages, total, state, device, amp, out, progress,
          stop_after_steps, time_limit_s, echo, monitor=None) -> Path:
    """Steps until `total` (or the call's step / time limit); log, measure the norms (`monitor`,
    on its steps only), checkpoint, report throughput."""
    from tqdm import tqdm

    params = list(trainable_parameters(task.model).values())
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else nullcontext
    started, start_step, start_tokens = time.perf_counter(), state["step"], state["tokens"]
    base_seconds, last_ckpt = state["seconds"], None
    stopping_step = start_step + stop_after_steps if stop_after_steps is not None else None
    bar = tqdm(total=total, initial=start_step, disable=not progress, unit="step",
               desc=f"train {config.method}")
    task.model.train()
    with (out / LOG_FILE).open("a") as log:
        while state["step"] < total:
            stage = stage_at(plan_stages, state["step"])["name"]
            result = optimizer_step(task, order, opt, sched, params, config, state["step"], stage,
                                    device, autocast)
            if hasattr(task, "after_step"):  # loraprune: prunes on its schedule's steps
                task.after_step(state["step"] + 1)
            if state["step"] + 1 in (total, stopping_step):
                _synchronize(device)  # the seconds of the last step of a call include its work
            elapsed = time.perf_counter() - started
            state.update(step=state["step"] + 1, tokens=state["tokens"] + result.tokens,
                         seconds=base_seconds + elapsed)
            bar.update(1)
            if state["step"] % config.log_every == 0 or state["step"] == total:
                parts = result.read()  # the step's one host read
                epoch = state["step"] * config.grad_accum * task.items_per_micro / task.n_items
                log.write(json.dumps({"step": state["step"], "stage": stage,
                                      **{k: round(parts[k], 6) for k in LOSS_KEYS},
                                      "lr": result.lr, "grad_norm": round(parts["grad_norm"], 6),
                                      "tokens": state["tokens"],
                                      "seconds": round(state["seconds"], 3),
                                      "epoch": round(epoch, 4)}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{parts['loss']:.3f}",
                                tok_s=f"{(state['tokens'] - start_tokens) / max(elapsed, 1e-9):.0f}")
            if monitor is not None:  # before the checkpoint: a resume keeps the rows up to it
                monitor.after_step(state["step"])
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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _report_throughput(config, state, start_step, start_tokens, elapsed, total, device, echo):
    ran, tokens = state["step"] - start_step, state["tokens"] - start_tokens
    if not ran:
        return
    peak = (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
            if device.type == "cuda" else "")
    echo(f"{config.method}: {ran} steps, {tokens} tokens in {elapsed:.1f} s: "
         f"{tokens / elapsed:.0f} tokens/s, {elapsed / ran:.2f} s/step "
         f"(step {state['step']} of {total}){peak}")
