"""Where REAR's exact match is lost: its routing against other ways of picking one of its own
per-passage answers, from a REAR test run's report (every citation carries the passage's answer).

    python scripts/rear_oracle.py runs/gpu3/test/nq-test/rear/rear [...]

Rows: REAR as run (its routing); the answer read from the passage with the highest relevance;
from the dense top-1 passage; from the first answer-containing passage in dense order (a rank
head that knew the label); any passage's answer right (the ceiling of choosing one). Over all
questions and the answerable ones. Then how often the passage each rule trusts contains a gold
answer, over all questions, beside the dense top-3 (what rag-ft at k = 3 reads).
"""
import json
import sys
from pathlib import Path

from rearqa.eval.metrics import exact_match


def pick(row: dict) -> dict[str, str]:
    by_id = {c["id"]: c for c in row["citations"]}
    cites = [by_id[pid] for pid in row["retrieved_ids"]]  # dense order
    best = max(cites, key=lambda c: c["relevance"])
    holding = [c for c, has in zip(cites, row["retrieved_has_answer"]) if has]
    return {"REAR as run": row["prediction"], "highest relevance": best["answer"],
            "dense top-1": cites[0]["answer"],
            "first answer-containing (label oracle)": (holding or cites)[0]["answer"]}


def passage_hits(rows: list[dict]) -> dict[str, float]:
    """Share of questions whose highest-relevance passage, dense top-1, or any of the dense
    top-3 contains a gold answer."""
    counts = {"highest relevance": 0, "dense top-1": 0, "any of the dense top-3": 0}
    for row in rows:
        relevance = {c["id"]: c["relevance"] for c in row["citations"]}
        has = row["retrieved_has_answer"]
        best = max(range(len(has)), key=lambda i: relevance[row["retrieved_ids"][i]])
        counts["highest relevance"] += has[best]
        counts["dense top-1"] += has[0]
        counts["any of the dense top-3"] += any(has[:3])
    return {name: n / len(rows) for name, n in counts.items()}


def main() -> None:
    for path in map(Path, sys.argv[1:]):
        rows = json.loads((path / "report.json").read_text())["rows"]
        print(f"\n{path}\n\n| answer taken from | EM all | EM answerable |\n|---|---|---|")
        groups = {"all": rows, "answerable": [r for r in rows if r.get("answerable")]}
        names = list(pick(rows[0])) + ["any passage right (ceiling)"]
        for name in names:
            ems = {}
            for group, chosen in groups.items():
                if name.startswith("any passage"):
                    hits = [max(exact_match(c["answer"], r["answers"]) for c in r["citations"])
                            for r in chosen]
                else:
                    hits = [exact_match(pick(r)[name], r["answers"]) for r in chosen]
                ems[group] = sum(hits) / len(hits)
            print(f"| {name} | {ems['all']:.3f} | {ems['answerable']:.3f} |")
        print("\n| passage | holds a gold answer (all questions) |\n|---|---|")
        for name, hit in passage_hits(rows).items():
            print(f"| {name} | {hit:.3f} |")


if __name__ == "__main__":
    main()
