"""Does an inference-time backbone change REAR's relevance judgments? Rank-head AUC of two REAR
eval runs over the same questions (the first the reference, e.g. unpruned; the second e.g. under
SpAtten), paired, with question-bootstrap intervals (rank_metrics.auc_comparison).

    rearqa eval --dataset nq-dev-select --method rear --k 5 --limit 40 --out runs/rear-none
    rearqa eval --dataset nq-dev-select --method rear --k 5 --limit 40 \
        --backbone spatten:tokens=0.6 --out runs/rear-t60
    python scripts/rear_backbone_auc.py runs/rear-none runs/rear-t60 --out docs/results/spatten/rear-auc.json

Pairs: each question's k given passages, the label "contains a gold answer" (the rows'
retrieved_has_answer), the score the rank head's relevance logit from the citations. Also the
share of passages whose judgment (relevant / irrelevant) flipped between the runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.eval.compare import load_run_rows  # noqa: E402
from rearqa.eval.rank_metrics import auc_comparison  # noqa: E402


def read_rows(run: Path) -> dict[str, dict]:
    """A run's rows by question id: its report.json, or the archived rows.jsonl.gz."""
    return {row["id"]: row for row in load_run_rows(run)}


def groups(rows: dict[str, dict], ids: list[str]) -> tuple[list, list]:
    """Per question: (relevance scores, labels) of its given passages; and the judgments."""
    out, judgments = [], []
    for qid in ids:
        row = rows[qid]
        by_id = {c["id"]: c for c in row["citations"]}
        given = row["given_ids"]
        labels = [row["retrieved_has_answer"][row["retrieved_ids"].index(pid)] for pid in given]
        out.append(([by_id[pid]["relevance"] for pid in given], labels))
        judgments.append([by_id[pid]["judgment"] for pid in given])
    return out, judgments


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", type=Path, help="a run directory (report.json or rows.jsonl.gz)")
    p.add_argument("other", type=Path, help="the same questions under the backbone")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    ref, other = read_rows(args.reference), read_rows(args.other)
    ids = sorted(set(ref) & set(other))
    if not ids:
        raise SystemExit(f"{args.reference} and {args.other} share no question")
    ref_groups, ref_j = groups(ref, ids)
    other_groups, other_j = groups(other, ids)
    names = [f"reference {args.reference.name} ({ref[ids[0]]['backbone']})",
             f"other {args.other.name} ({other[ids[0]]['backbone']})"]
    result = auc_comparison({names[0]: ref_groups, names[1]: other_groups})
    flips = sum(a != b for ja, jb in zip(ref_j, other_j) for a, b in zip(ja, jb))
    pairs = sum(len(j) for j in ref_j)
    result.update(judgment_flips=flips, judgment_pairs=pairs,
                  em={name: sum(r[q]["em"] for q in ids) / len(ids) for name, r in zip(names, (ref, other))})
    for name in names:
        s = result["scorers"][name]["pooled"]
        print(f"{name}: pooled AUC {s['value']:.3f} [{s['low']:.3f}, {s['high']:.3f}], EM {result['em'][name]:.3f}")
    d = result["differences"][names[1]]["pooled"]
    print(f"difference {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] over {result['n_questions']} "
          f"questions, {result['n_pairs']} pairs ({result['n_positive']} positive); judgments flipped: "
          f"{flips} of {pairs}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
