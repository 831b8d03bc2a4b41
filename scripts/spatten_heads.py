"""Are the heads SpAtten's head pruning removes the weakly composed ones (issue 14)?

    rearqa eval --dataset nq-dev-select --method rag-ft --k 3 --backbone spatten:heads=0.6 \
        --limit 40 --out runs/spatten-heads
    python scripts/spatten_heads.py runs/spatten-heads --scores docs/results/heads/scores.json \
        --out docs/results/heads/spatten-vs-composition.json

SpAtten prunes a query head *index* from a layer on (cascade: the head with that index is gone
from every later layer, as in the paper), chosen per input by the accumulated output magnitude.
`rearqa inspect heads` scores each (layer, head) by weights alone: its outgoing composition
strength, the subspace score averaged over the q, k and v kinds and over the later heads
(`heads_report.strength`). For each head index this script puts side by side: how often SpAtten
pruned it over the run's questions, and the mean strength of that index over the layers it is
pruned from (each question's own layers, averaged); and the Spearman rank correlation over the
indices between pruning frequency and strength (negative: the pruned ones are the weak ones).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def strength_table(scores: dict) -> np.ndarray:
    """(L, H) outgoing composition strength: subspace out_mean averaged over q, k, v (NaN for the
    last layer, which writes to no later head)."""
    def table(kind: str) -> np.ndarray:
        rows = scores["heads"][f"{kind}/subspace"]["out_mean"]
        return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    return np.mean([table(kind) for kind in "qkv"], axis=0)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (average ranks for ties)."""
    def ranks(v: np.ndarray) -> np.ndarray:
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def compare(rows: list[dict], strength: np.ndarray) -> dict:
    layers, heads = strength.shape
    pruned = np.array([row["pruned_heads"] for row in rows if row.get("pruned_heads")])  # (N, H)
    if pruned.size == 0:
        raise SystemExit("no row carries pruned_heads: run the eval with --backbone spatten:heads=...")
    frequency = (pruned >= 0).mean(axis=0)  # (H,)
    per_head = []
    for h in range(heads):
        starts = pruned[:, h][pruned[:, h] >= 0]
        # strength of index h over the layers it is pruned from, averaged over the questions
        pruned_strength = float(np.mean([np.nanmean(strength[s:, h]) for s in starts])) if len(starts) else None
        per_head.append({"head": h, "pruned_share": float(frequency[h]),
                         "mean_first_layer": float(starts.mean()) if len(starts) else None,
                         "strength_all_layers": float(np.nanmean(strength[:, h])),
                         "strength_where_pruned": pruned_strength})
    start = int(pruned[pruned >= 0].min()) if (pruned >= 0).any() else 0
    late = np.nanmean(strength[start:], axis=0)  # (H,) each index over the layers pruning can act on
    return {"questions": len(pruned), "heads": per_head,
            "spearman_pruned_share_vs_strength": spearman(frequency, late),
            "strength_layers_from": start,
            "weakest_by_strength": [int(h) for h in late.argsort()],
            "most_pruned": [int(h) for h in (-frequency).argsort(kind="stable")]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="an eval run directory read with --backbone spatten:heads=...")
    p.add_argument("--scores", type=Path, default=Path("docs/results/heads/scores.json"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = [json.loads(line) for line in (args.run / "rows.jsonl").read_text().splitlines() if line]
    scores = json.loads(args.scores.read_text())
    result = compare(rows, strength_table(scores))
    result["run"] = str(args.run)
    result["backbone"] = sorted({row.get("backbone", "") for row in rows})
    print(f"{result['questions']} questions; {result['backbone']}")
    print(f"{'head':>4} {'pruned':>7} {'first layer':>11} {'strength (all)':>14} {'(where pruned)':>14}")
    for h in result["heads"]:
        where = h["strength_where_pruned"]
        first = h["mean_first_layer"]
        print(f"{h['head']:>4} {h['pruned_share']:>7.2f} {'-' if first is None else f'{first:.1f}':>11} "
              f"{h['strength_all_layers']:>14.4f} {'-' if where is None else f'{where:.4f}':>14}")
    print(f"Spearman(pruned share, strength over layers {result['strength_layers_from']}+): "
          f"{result['spearman_pruned_share_vs_strength']:.3f}")
    print(f"weakest indices by strength: {result['weakest_by_strength']}; most pruned: {result['most_pruned']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
