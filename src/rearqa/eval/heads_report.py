"""scores.json and heatmap.png for `rearqa inspect heads` (the scores: rearqa.eval.heads).

The full head-by-head scores (3 kinds x 2 measures x ~36k pairs for SmolLM2) are recomputed in
seconds, so the JSON keeps what a reader looks up: the layer-by-layer aggregates, each head's
outgoing and incoming composition, the strongest pairs, and the heads and KV groups that compose
least (what a head-pruning comparison checks its removed heads against).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rearqa.eval.heads import KINDS, MEASURES, Composition, random_baselines
from rearqa.eval.report import write_json

DIGITS = 4


def rounded(values: torch.Tensor) -> list:
    """A tensor as nested lists of floats at DIGITS, NaN (no such pair) as None."""
    return [rounded(v) for v in values] if values.dim() else (
        None if torch.isnan(values) else round(float(values), DIGITS))


def head_name(layer: int, head: int) -> str:
    """Dotted module-style names, as masks and adapters name layers: "layers.3.h5"."""
    return f"layers.{layer}.h{head}"


def nan_max(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Max over `dims` ignoring NaN; NaN where every value is NaN."""
    filled = values.nan_to_num(float("-inf")).amax(dim=dims)
    return filled.masked_fill(filled == float("-inf"), float("nan"))


def head_table(comp: Composition, measure: str, kind: str) -> dict[str, torch.Tensor]:
    """Per query head (L, H): outgoing (over the later heads that read it) and incoming (over the
    earlier heads it reads) composition, mean and max."""
    score = comp.per_query_head(measure, kind)  # (L, H, L, H)
    return {"out_mean": score.nanmean(dim=(2, 3)), "out_max": nan_max(score, (2, 3)),
            "in_mean": score.nanmean(dim=(0, 1)), "in_max": nan_max(score, (0, 1))}


def top_pairs(comp: Composition, kind: str, count: int) -> list[dict[str, Any]]:
    """The `count` strongest pairs by subspace score; a k or v reader is a KV head ("kv1")."""
    subspace, frob = comp.scores["subspace"][kind], comp.scores["frobenius"][kind]
    flat = subspace.nan_to_num(float("-inf")).flatten()
    best = flat.topk(min(count, int(torch.isfinite(flat).sum()))).indices
    rows = []
    for index in best.tolist():
        i, a, j, b = (int(x) for x in torch.unravel_index(torch.tensor(index), subspace.shape))
        reader = head_name(j, b) if kind == "q" else f"layers.{j}.kv{b}"
        rows.append({"writer": head_name(i, a), "reader": reader,
                     "subspace": round(float(subspace[i, a, j, b]), DIGITS),
                     "frobenius": round(float(frob[i, a, j, b]), DIGITS)})
    return rows


def strength(comp: Composition) -> dict[str, torch.Tensor]:
    """Each query head's composition strength (L, H): the subspace score averaged over the three
    kinds, outgoing (how much later heads read what it writes) and incoming (how much it reads of
    what earlier heads write), each the mean over the heads on the other side."""
    tables = [head_table(comp, "subspace", kind) for kind in KINDS]
    return {side: torch.stack([t[f"{side}_mean"] for t in tables]).mean(dim=0) for side in ("out", "in")}


def weakest(comp: Composition, count: int) -> dict[str, list[dict[str, Any]]]:
    """The least-composed query heads and KV groups (a KV head with its query heads, the unit
    LoRAPrune removes), by outgoing strength; the last layer writes to no later head and is left
    out. Incoming strength is given beside it (the first layer reads no earlier head)."""
    power = strength(comp)
    layers, heads = power["out"].shape
    out = power["out"][:-1]  # (L-1, H)
    order = out.flatten().argsort()[:count].tolist()
    rows = [{"head": head_name(n // heads, n % heads), "out": round(float(out.flatten()[n]), DIGITS),
             "in": rounded(power["in"][n // heads, n % heads])} for n in order]
    groups = {side: v.view(layers, -1, comp.group).mean(dim=-1) for side, v in power.items()}
    g_out = groups["out"][:-1]
    kv_heads = g_out.shape[1]
    g_order = g_out.flatten().argsort()[:count].tolist()
    group_rows = [{"group": f"layers.{n // kv_heads}.kv{n % kv_heads}",
                   "query_heads": [n % kv_heads * comp.group + k for k in range(comp.group)],
                   "out": round(float(g_out.flatten()[n]), DIGITS),
                   "in": rounded(groups["in"][n // kv_heads, n % kv_heads])} for n in g_order]
    return {"heads": rows, "kv_groups": group_rows}


def summary(comp: Composition, source: dict[str, Any], model_shape: dict[str, int],
            top: int = 50) -> dict[str, Any]:
    """What scores.json holds (see the module docstring)."""
    out: dict[str, Any] = {
        "reader": source, "model": model_shape,
        "settings": {"rank": comp.rank, "kinds": list(KINDS), "measures": list(MEASURES),
                     "rope": "query and key sides scored separately (RoPE-invariant)",
                     "norms": "input RMSNorm gains folded into W_Q/W_K/W_V; per-token scale ignored"},
        "random_baseline": random_baselines(comp.rank, model_shape["hidden"]),
        "distribution": {}, "layer_pairs": {}, "heads": {}, "top_pairs": {},
    }
    for measure in MEASURES:
        for kind in KINDS:
            score = comp.scores[measure][kind]
            values = score[~torch.isnan(score)]
            key = f"{kind}/{measure}"
            out["distribution"][key] = {name: round(float(v), DIGITS) for name, v in (
                ("mean", values.mean()), ("median", values.median()),
                ("p99", values.quantile(0.99)), ("max", values.max()), ("pairs", values.numel()))}
            out["layer_pairs"][key] = {"mean": rounded(score.nanmean(dim=(1, 3))),
                                       "max": rounded(nan_max(score, (1, 3)))}
            out["heads"][key] = {name: rounded(v) for name, v in head_table(comp, measure, kind).items()}
    out["top_pairs"] = {kind: top_pairs(comp, kind, top) for kind in KINDS}
    out["weakest"] = weakest(comp, 20)
    return out


def plot_heatmap(comp: Composition, path: Path, title: str) -> Path:
    """Top row: layer x layer mean subspace score for Q, K, V composition (writer layer down,
    reader layer across). Bottom row: head x head Q and K composition, and each head's outgoing
    strength (layer x head)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 9.5), dpi=80)
    FigureCanvasAgg(figure)
    layer_maps = {k: comp.scores["subspace"][k].nanmean(dim=(1, 3)) for k in KINDS}
    top = max(float(torch.nan_to_num(m, 0).max()) for m in layer_maps.values())
    for n, kind in enumerate(KINDS):
        axes = figure.add_subplot(2, 3, n + 1)
        image = axes.imshow(layer_maps[kind].numpy(), vmin=0, vmax=top, cmap="viridis")
        axes.set_title(f"{kind.upper()}-composition: mean over head pairs", fontsize=9)
        axes.set_xlabel("reader layer j", fontsize=8)
        axes.set_ylabel("writer layer i", fontsize=8)
        figure.colorbar(image, ax=axes, fraction=0.046)
    layers, heads = comp.scores["subspace"]["q"].shape[:2]
    for n, kind in enumerate(("q", "k")):
        axes = figure.add_subplot(2, 3, 4 + n)
        pairs = comp.per_query_head("subspace", kind).reshape(layers * heads, layers * heads)
        image = axes.imshow(pairs.numpy(), cmap="magma", interpolation="nearest")
        axes.set_title(f"{kind.upper()}-composition, head x head (writer down, reader across)", fontsize=9)
        axes.set_xticks(range(0, layers * heads, 5 * heads), range(0, layers, 5), fontsize=7)
        axes.set_yticks(range(0, layers * heads, 5 * heads), range(0, layers, 5), fontsize=7)
        figure.colorbar(image, ax=axes, fraction=0.046)
    axes = figure.add_subplot(2, 3, 6)
    image = axes.imshow(strength(comp)["out"].T.numpy(), aspect="auto", cmap="viridis")
    axes.set_title("outgoing strength per head (mean of Q/K/V over later heads)", fontsize=9)
    axes.set_xlabel("layer", fontsize=8)
    axes.set_ylabel("query head", fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def write_outputs(comp: Composition, source: dict[str, Any], model_shape: dict[str, int],
                  out_dir: Path, top: int = 50) -> dict[str, Path]:
    """scores.json and heatmap.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = summary(comp, source, model_shape, top)
    baseline = result["random_baseline"]["subspace"]
    title = (f"Head composition of {source.get('path')}: subspace score, top "
             f"{comp.rank} singular vectors per side (random subspaces: {baseline:.3f})")
    return {"json": write_json(result, out_dir / "scores.json"),
            "png": plot_heatmap(comp, out_dir / "heatmap.png", title)}
