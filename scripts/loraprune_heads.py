"""Are the KV groups LoRAPrune removed the weakly composed ones (issue 14's head analysis)?

    python scripts/loraprune_heads.py checkpoints/healed/ragft-loraprune-2-1024/mask.json \
        --scores docs/results/heads/scores.json --out docs/results/heads/loraprune-vs-composition.json

LoRAPrune (issue 13) removes whole KV groups (a KV head with its query heads), the same number in
every layer, chosen by the importance its LoRA gradients estimate. `rearqa inspect heads` scores
each head by weights alone: its outgoing composition strength (scripts/spatten_heads.py
`strength_table`). For each layer that has later readers this script ranks the layer's KV groups
by the mean strength of their query heads (0 = the weakest) and reports where the removed group
falls, with the chance of removing at least as many of the weakest (or of the strongest) by
picking the removed groups at random (binomial, probability 1 / groups per layer; exact for one
removed group a layer, as in the shipped 3 -> 2 mask).

`--masks-out DIR` also writes three head-only masks of the same shape (every MLP channel kept, so
that only the KV-group choice differs): LoRAPrune's groups, the weakest-composed group of each
layer removed, and the strongest removed (a layer without a strength keeps LoRAPrune's groups), for
`rearqa convert --transform loraprune --mask` and scripts/healed_ppl.py (docs/backbone.md).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from spatten_heads import strength_table


def removed_ranks(strength: np.ndarray, kv_keep: list[list[int]], kv_heads: int) -> list[dict]:
    """Per layer with a finite strength: each group's strength, the removed groups and their rank."""
    layers, heads = strength.shape
    group = heads // kv_heads
    out = []
    for layer, keep in enumerate(kv_keep[:layers]):
        groups = strength[layer].reshape(kv_heads, group).mean(axis=1)
        if not np.isfinite(groups).all():
            continue  # the last layer writes to no later head
        order = list(np.argsort(groups, kind="stable"))
        removed = [g for g in range(kv_heads) if g not in keep]
        out.append({"layer": layer, "strength": [round(float(v), 4) for v in groups],
                    "removed": removed, "rank": [order.index(g) for g in removed]})
    return out


def head_only_masks(mask: dict, rows: list[dict]) -> dict[str, dict]:
    """LoRAPrune's KV groups, and the weakest / strongest group removed per layer, all MLP kept."""
    strengths = {row["layer"]: row["strength"] for row in rows}
    keep_all = list(range(mask["intermediate"]))
    kept = len(mask["kv_keep"][0])  # groups a layer keeps (the servable masks keep as many in each)

    def choose(pick) -> dict:
        kv = [sorted(pick(strengths[layer])) if layer in strengths else keep
              for layer, keep in enumerate(mask["kv_keep"])]
        return {**mask, "kv_keep": kv, "mlp_keep": [keep_all for _ in mask["mlp_keep"]]}

    by_strength = lambda s: sorted(range(len(s)), key=lambda g: s[g])  # noqa: E731
    return {"loraprune-heads": {**mask, "mlp_keep": [keep_all for _ in mask["mlp_keep"]]},
            "drop-weakest": choose(lambda s: by_strength(s)[-kept:]),
            "drop-strongest": choose(lambda s: by_strength(s)[:kept])}


def at_least(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mask", type=Path, help="LoRAPrune's mask.json (kv_keep per layer)")
    ap.add_argument("--scores", type=Path, default=Path("docs/results/heads/scores.json"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--masks-out", type=Path, default=None, help="write the three head-only masks here")
    args = ap.parse_args()
    mask = json.loads(args.mask.read_text())
    rows = removed_ranks(strength_table(json.loads(args.scores.read_text())), mask["kv_keep"], mask["kv_heads"])
    ranks = [r for row in rows for r in row["rank"]]
    weakest, strongest = sum(r == 0 for r in ranks), sum(r == mask["kv_heads"] - 1 for r in ranks)
    chance = 1 / mask["kv_heads"]
    summary = {"layers": len(rows), "removed_groups": len(ranks), "kv_heads": mask["kv_heads"],
               "removed_is_weakest": weakest, "removed_is_strongest": strongest,
               "mean_rank": float(np.mean(ranks)), "chance_mean_rank": (mask["kv_heads"] - 1) / 2,
               "p_at_least_as_many_weakest_by_chance": at_least(weakest, len(ranks), chance),
               "p_at_least_as_many_strongest_by_chance": at_least(strongest, len(ranks), chance)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"mask": str(args.mask), "scores": str(args.scores), "summary": summary,
                                    "layers": rows}, indent=1) + "\n", encoding="utf-8")
    print("layer  group strengths (mean outgoing subspace score)   removed  rank")
    for row in rows:
        print(f"{row['layer']:5d}  {'  '.join(f'{v:.4f}' for v in row['strength']):40s}  {row['removed']}  {row['rank']}")
    print(json.dumps(summary, indent=1))
    if args.masks_out:
        args.masks_out.mkdir(parents=True, exist_ok=True)
        for name, out in head_only_masks(mask, rows).items():
            (args.masks_out / f"{name}.json").write_text(json.dumps(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
