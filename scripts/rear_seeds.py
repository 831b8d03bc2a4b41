"""REAR against the baselines over every seed run so far: the issue's bars are per question,
REAR's seeds averaged against each baseline's seeds averaged (docs/rear.md "Bars").

    python scripts/rear_seeds.py runs/gpu6/eval-test-linear-s0.tgz runs/gpu7/eval-test-linear-s1.tgz \
        runs/gpu6/eval-test-ragft-s0.tgz runs/gpu8/eval-test-ragft-s1.tgz \
        runs/gpu7/eval-test-cbft-s0.tgz runs/gpu8/eval-test-cbft-s1.tgz \
        --out docs/results/rear-test-seeds.json

Each archive is an eval-test unit (scripts/gpu_unit.sh): <unit>/<split>/<method>/report.json.
Per split and method: each seed's EM (answerable questions and all); then REAR's per-question EM
averaged over its seeds minus each baseline's averaged over its seeds, on the questions every run
answered, with a 95% paired-bootstrap interval (10,000 question resamples).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SPLITS = ("nq-test", "tqa-test", "squad-test")
GROUPS = ("answerable", "all")


def read_units(archives: list[Path]) -> dict[str, dict[str, dict[str, dict]]]:
    """split -> method -> seed name -> {question id: row}."""
    runs: dict[str, dict[str, dict[str, dict]]] = {}
    for archive in archives:
        seed = re.search(r"-(s\d+)\.tgz$", archive.name)
        if seed is None:
            raise SystemExit(f"{archive}: expected an eval-test-<name>-s<N>.tgz archive")
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 4 and parts[1] in SPLITS and parts[3] == "report.json":
                    rows = json.load(tar.extractfile(member))["rows"]
                    runs.setdefault(parts[1], {}).setdefault(parts[2], {})[seed.group(1)] = {
                        r["id"]: r for r in rows}
    return runs


def summarise(runs: dict) -> dict:
    from rearqa.eval.bootstrap import paired_bootstrap

    seeds, pairs = [], []
    for split in SPLITS:
        methods = runs.get(split, {})
        for method, by_seed in sorted(methods.items()):
            for seed, rows in sorted(by_seed.items()):
                for group in GROUPS:
                    chosen = [r for r in rows.values() if group == "all" or r.get("answerable")]
                    seeds.append({"split": split, "method": method, "seed": seed, "group": group,
                                  "n": len(chosen), "em": statistics.fmean(r["em"] for r in chosen)})
        if "rear" not in methods:
            continue
        rear = list(methods["rear"].values())
        for method, by_seed in sorted(methods.items()):
            if method == "rear":
                continue
            base = list(by_seed.values())
            ids = [q for q in rear[0] if all(q in s for s in rear + base)]
            for group in GROUPS:
                chosen = [q for q in ids if group == "all" or rear[0][q].get("answerable")]
                a = [statistics.fmean(s[q]["em"] for s in base) for q in chosen]
                b = [statistics.fmean(s[q]["em"] for s in rear) for q in chosen]
                res = paired_bootstrap(a, b, 10000, 0)
                pairs.append({"split": split, "group": group, "baseline": method,
                              "rear_seeds": sorted(methods["rear"]), "baseline_seeds": sorted(by_seed),
                              "n": res["n"], "rear_em": res["mean_b"], "baseline_em": res["mean_a"],
                              "diff": res["diff"], "low": res["low"], "high": res["high"]})
    return {"seeds": seeds, "rear_minus_baseline_seed_means": pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archives", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = summarise(read_units(args.archives))
    print("| set | method | seed | answerable EM (n) | all EM (n) |\n|---|---|---|---|---|")
    rows = {(s["split"], s["method"], s["seed"], s["group"]): s for s in result["seeds"]}
    for (split, method, seed, group), s in rows.items():
        if group == "answerable":
            a = rows[(split, method, seed, "all")]
            print(f"| {split} | {method} | {seed} | {s['em']:.3f} ({s['n']}) | {a['em']:.3f} ({a['n']}) |")
    print("\n| set | group | REAR seeds' mean minus | n | REAR | baseline | diff (points) | 95% CI |\n"
          "|---|---|---|---|---|---|---|---|")
    for p in result["rear_minus_baseline_seed_means"]:
        print(f"| {p['split']} | {p['group']} | {p['baseline']} ({'+'.join(p['baseline_seeds'])}) | {p['n']} "
              f"| {p['rear_em']:.3f} | {p['baseline_em']:.3f} | {100 * p['diff']:+.1f} "
              f"| [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}] |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
