"""Norm monitoring: the max-entry norms of X W_Q and X W_K, adapter included, during training.

Hu, Su, Kuo, Song and Liu, "Computational Limits of Low-Rank Adaptation (LoRA) for
Transformer-Based Models" (arXiv 2406.03136), bound the efficiency of LoRA's gradient computation
by norms of products of the input sequence X, the pre-trained weights W* and the adapter
alpha B A / r: below a threshold of order o(sqrt(log L)) in the max-entry norms (L the sequence
length) almost linear algorithms exist, and above it (assuming SETH) no sub-quadratic one does.
The threshold is asymptotic and has no constants, so nothing here compares against a number;
the monitor records what the norms are, next to sqrt(log L), and docs/adapters.md says what was
observed.

Every `norm_monitor_every` optimiser steps (and at step 0 and the last step) `NormMonitor`
forwards a fixed probe, `norm_probe_rows` training rows spread evenly over the task's tokenised
rows, one row at a time (no padding, so every position is a real token), under no_grad with the
model in eval mode (no dropout, no RNG drawn), and reads per decoder layer:

    x_max  max |X|          X: the input of q_proj / k_proj, i.e. the hidden state after the
                            layer's input RMSNorm
    q_max  max |X W_Q^T|    the q_proj module's own output: base + the adapter's delta (any method
    k_max  max |X W_K^T|    that wraps the projection), before RoPE and before the 1/sqrt(head_dim)
                            softmax scale
    L      the longest probe row; sqrt_log_L = sqrt(ln L)

The maxima run over every probe row, position and output channel (all heads). A fixed probe
makes the steps comparable (a change is the weights', not the data's) and survives a resume.
RoPE rotates pairs of channels, so the max entry after it is at most sqrt(2) x the one before.

Rows go to `norms.jsonl` in the run directory (rearqa.training.run_files), one per layer and
measured step; a resumed run drops the rows after its checkpoint, as train_log.jsonl does.

    python -m rearqa.training.norms RUN_DIR --out norms.png    # the plot (and --summary JSON)
"""
from __future__ import annotations

import argparse
import json
import math
import re
from contextlib import nullcontext
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.training.run_files import NORMS_FILE, truncate_records

PROJECTIONS = ("q_proj", "k_proj")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def causal_decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack of the transformers model inside `model` (a PEFT model, a RearModel or a
    plain causal LM): the first PreTrainedModel in it, its `get_decoder()`."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module.get_decoder()
    raise ConfigError(f"train.norm_monitor_every: {type(model).__name__} holds no transformers "
                      "model to monitor")


def attention_projections(decoder: torch.nn.Module) -> dict[int, dict[str, torch.nn.Module]]:
    """layer index -> {"q_proj": module, "k_proj": module}: the outermost modules of those names
    (an adapter's wrapper, whose output includes its delta)."""
    layers: dict[int, dict[str, torch.nn.Module]] = {}
    for name, module in decoder.named_modules():
        kind, layer = name.rsplit(".", 1)[-1], _LAYER.search(name)
        if kind in PROJECTIONS and layer:
            layers.setdefault(int(layer.group(1)), {})[kind] = module
    if not layers or any(set(p) != set(PROJECTIONS) for p in layers.values()):
        raise ConfigError("train.norm_monitor_every: norm monitoring reads each layer's q_proj and "
                          f"k_proj; this model has {sorted(layers.items()) or 'none'} (an MLA "
                          "student has no k_proj); set norm_monitor_every: 0")
    return dict(sorted(layers.items()))


def probe_rows(task, count: int) -> list[torch.Tensor]:
    """`count` of the task's tokenised training rows, spread evenly over them in index order
    (rear, rag-ft, closed-book-ft: `task.rows`; distill, loraprune: its `parts` end to end)."""
    parts = getattr(task, "parts", None) or [task.rows]
    where = [(part, i) for part in parts for i in range(len(part))]
    if not where:
        raise ConfigError("train.norm_monitor_every: the task has no training rows to probe")
    count = min(count, len(where))
    picks = sorted({round(k * (len(where) - 1) / max(count - 1, 1)) for k in range(count)})
    return [where[p][0].ids[where[p][0].row(where[p][1])].long() for p in picks]


@torch.no_grad()
def measure(model: torch.nn.Module, probe: list[torch.Tensor], device: torch.device,
            amp: torch.dtype | None = None) -> list[dict]:
    """Per decoder layer of `model`: max |X|, max |X W_Q|, max |X W_K| over the `probe` rows, with
    L (the longest row) and sqrt(ln L). Eval mode and no_grad; every module's mode is restored.
    One host read."""
    decoder = causal_decoder(model)
    layers = attention_projections(decoder)
    found: dict[tuple[int, str], list[torch.Tensor]] = {}

    def hook(layer: int, kind: str):
        def record(module, args, output):
            if kind == "q_proj":  # q_proj and k_proj read the same X
                found.setdefault((layer, "x"), []).append(args[0].detach().abs().amax().float())
            found.setdefault((layer, kind), []).append(output.detach().abs().amax().float())
        return record

    handles = [module.register_forward_hook(hook(layer, kind))
               for layer, projections in layers.items() for kind, module in projections.items()]
    modes = {module: module.training for module in model.modules()}
    model.eval()
    autocast = torch.autocast(device.type, dtype=amp) if amp else nullcontext()
    try:
        with autocast:
            for ids in probe:
                decoder(input_ids=ids.to(device)[None], use_cache=False)  # (1, L_row)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    keys = [(layer, kind) for layer in layers for kind in ("x", "q_proj", "k_proj")]
    maxima = torch.stack([torch.stack(found[k]).amax() for k in keys]).tolist()  # the host read
    values = dict(zip(keys, maxima))
    length = max(len(ids) for ids in probe)
    return [{"layer": layer, "q_max": round(values[layer, "q_proj"], 5),
             "k_max": round(values[layer, "k_proj"], 5), "x_max": round(values[layer, "x"], 5),
             "L": length, "sqrt_log_L": round(math.sqrt(math.log(length)), 5),
             "rows": len(probe), "head_dim": head_dim(decoder.config)} for layer in layers]


def head_dim(config) -> int:
    """Channels per attention head (the softmax divides q.k by its square root)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class NormMonitor:
    """What the training loop calls: `start(step)` once, `after_step(step)` after each step."""

    def __init__(self, task, config, out: Path, device: torch.device,
                 amp: torch.dtype | None, total: int) -> None:
        self.model, self.device, self.amp, self.total = task.model, device, amp, total
        self.every = config.norm_monitor_every
        self.path = Path(out) / NORMS_FILE
        attention_projections(causal_decoder(self.model))  # refuse an unfit model before step 1
        self.probe = probe_rows(task, config.norm_probe_rows)

    def start(self, step: int) -> None:
        """Drop the rows after the resumed `step` (they are about to be redone); a run starting at
        step 0 drops every row and measures the model before training."""
        truncate_records(self.path, step if step else -1)
        if step == 0:
            self.record(0)

    def after_step(self, step: int) -> None:
        if step % self.every == 0 or step == self.total:
            self.record(step)

    def record(self, step: int) -> None:
        rows = measure(self.model, self.probe, self.device, self.amp)
        with self.path.open("a") as f:
            f.write("".join(json.dumps({"step": step, **row}) + "\n" for row in rows))


# ---------------------------------------------------------------------------- reading and plotting

def read_norms(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / NORMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train with norm_monitor_every > 0")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(rows: list[dict]) -> dict:
    """Per layer, the first and last measured step's q_max / k_max and their ratio to sqrt(ln L);
    the ratios say how far above or below the line the norms sit (the paper gives no constant)."""
    steps = sorted({r["step"] for r in rows})
    first, last = steps[0], steps[-1]
    at = {(r["step"], r["layer"]): r for r in rows}
    layers = []
    for layer in sorted({r["layer"] for r in rows}):
        a, b = at[first, layer], at[last, layer]
        layers.append({"layer": layer, **{f"{k}_{when}": r[k] for when, r in (("first", a), ("last", b))
                                          for k in ("q_max", "k_max")},
                       "q_ratio_last": round(b["q_max"] / b["sqrt_log_L"], 3),
                       "k_ratio_last": round(b["k_max"] / b["sqrt_log_L"], 3),
                       "q_growth": round(b["q_max"] / a["q_max"] - 1, 5),
                       "k_growth": round(b["k_max"] / a["k_max"] - 1, 5)})
    top = max(rows, key=lambda r: max(r["q_max"], r["k_max"]))
    return {"steps": steps, "L": rows[-1]["L"], "sqrt_log_L": rows[-1]["sqrt_log_L"],
            "head_dim": rows[-1].get("head_dim"), "probe_rows": rows[-1].get("rows"),
            "largest": {k: top[k] for k in ("step", "layer", "q_max", "k_max")}, "layers": layers}


def plot_norms(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """q_max (solid) and k_max (dashed) of every layer over the measured steps, coloured from the
    first layer (dark) to the last (light), on a log scale, with the sqrt(ln L) line."""
    from matplotlib import colormaps
    from matplotlib.ticker import ScalarFormatter

    from rearqa.eval.report import new_figure, save_figure

    figure, axes = new_figure(7, 4.5)
    layers = sorted({r["layer"] for r in rows})
    cmap = colormaps["viridis"]
    for k, layer in enumerate(layers):
        mine = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["step"])
        steps, color = [r["step"] for r in mine], cmap(k / max(len(layers) - 1, 1))
        named = k in (0, len(layers) - 1)  # the legend names the first and the last layer
        axes.plot(steps, [r["q_max"] for r in mine], linewidth=1, color=color,
                  label=f"layer {layer}: q solid, k dashed" if named else None)
        axes.plot(steps, [r["k_max"] for r in mine], linewidth=1, linestyle="--", color=color)
    steps = sorted({r["step"] for r in rows})
    line = {r["step"]: r["sqrt_log_L"] for r in rows}
    axes.plot(steps, [line[s] for s in steps], color="red", linewidth=2,
              label=f"sqrt(ln L), L = {rows[-1]['L']}")
    axes.set_yscale("log")
    for axis in (axes.yaxis.set_major_formatter, axes.yaxis.set_minor_formatter):
        axis(ScalarFormatter())  # 2, 3, 10, 20 rather than 2 x 10^0 ...
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("max entry of X W_Q, X W_K (before RoPE)")
    return save_figure(figure, axes, path, title or "max-entry norms per layer vs sqrt(ln L)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot a run's norms.jsonl (rearqa.training.norms).")
    parser.add_argument("run_dir", type=Path, help="a training run's out dir, holding norms.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--summary", type=Path, help="also write summarize() as JSON here")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    rows = read_norms(args.run_dir)
    plot_norms(rows, args.out, args.title)
    summary = summarize(rows)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("steps", "L", "sqrt_log_L", "largest")}))


if __name__ == "__main__":
    main()
