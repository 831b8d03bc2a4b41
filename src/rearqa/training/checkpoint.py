"""Pickle-free checkpoints: safetensors for tensors, JSON for the rest.

checkpoints/step-N/ under a run's `out` holds model/ (loadable, as final/), the trainable
parameters, the optimiser's moments keyed by parameter name, the scheduler, every RNG stream
(torch CPU and CUDA, Python, NumPy) and the trainer state (step, tokens, seconds). Loading one
restores all of them, so a resumed run repeats the uninterrupted one step for step. Nothing is
ever written with pickle or torch.save: a checkpoint can be opened without running code from it.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

from rearqa.training.config import ConfigMismatchError
from rearqa.training.run_files import CHECKPOINTS, save_json

CHECKPOINT_FORMAT = 1


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
    save_json(directory / "optimizer.json", {"param_groups": groups, "scalars": scalars})


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
    save_json(directory / "rng.json", {
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
    save_json(tmp / "scheduler.json", sched.state_dict())
    save_rng(tmp)
    if hasattr(task, "state_json"):  # a task's own state (loraprune: importance, mask, events)
        save_file(task.state_tensors(), tmp / "task_state.safetensors")
        save_json(tmp / "task_state.json", task.state_json())
    save_json(tmp / "trainer_state.json", {"format": CHECKPOINT_FORMAT, **trainer_state})
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
    if hasattr(task, "load_state"):
        if not (directory / "task_state.json").is_file():
            raise ConfigMismatchError(f"{directory}: no task_state.json, which this task keeps; "
                                      "the checkpoint is from another kind of run")
        task.load_state(load_file(directory / "task_state.safetensors"),
                        json.loads((directory / "task_state.json").read_text()))
    return json.loads((directory / "trainer_state.json").read_text())
