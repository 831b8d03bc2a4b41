"""Print the markdown table of benchmark (c) from the eval reports that scripts/bench_reader.sh writes."""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/c")
print("| set | method | group | n | EM | F1 | contained | words | s/question |")
print("|---|---|---|---|---|---|---|---|---|")
for ds in ("nq-test", "tqa-test"):
    for method in ("closed-book", "rag"):
        aggregate = json.loads((root / f"{ds}-{method}" / "report.json").read_text())["aggregate"]
        for group in ("all", "numeric", "other"):
            a = aggregate[group]
            print(f"| {ds} | {method} | {group} | {a['n']} | {a['em']:.3f} | {a['f1']:.3f} | "
                  f"{a['contained']:.3f} | {a['length']:.1f} | {a['seconds_per_question']:.2f} |")
