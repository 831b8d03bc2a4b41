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


def at_least(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mask", type=Path, help="LoRAPrune's mask.json (kv_keep per layer)")
    ap.add_argument("--scores", type=Path, default=Path("docs/results/heads/scores.json"))
    ap.add_argument("--out", type=Path, required=True)
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


if __name__ == "__main__":
    main()
