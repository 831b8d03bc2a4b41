"""The answer table of TransMLA's test-set units (gpu_unit.sh eval-mla) for docs/backbone.md.

    python scripts/transmla_report.py runs/mla1/eval-mla-ragft-s0 runs/mla1/eval-mla-base \
        --out docs/results/transmla/test-answers.json
    python scripts/transmla_report.py runs/mla1/x/eval-mla-ragft-s0 \
        --extra "96+64 healed=runs/gpu9/x/eval-healed-heal-96-64/healed" \
        --extra "x128+32 healed=runs/gpu9/x/eval-healed-heal-x128-32/healed" \
        --out docs/results/distill/test-answers.json

Each unit dir holds <setting>/<split>/<method>/report.json for the unconverted reader
("original") and each conversion ("96+64", ...), all on the answerable questions of the same
splits. Per reader: EM, F1 and contained; per conversion: the paired difference from the
original on the same questions with its 95% paired-bootstrap interval (10,000 resamples).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

METRICS = ("em", "f1", "contained")


def unit_rows(unit: Path, extra: dict[str, Path] | None = None) -> tuple[list[dict], list[dict]]:
    """`extra`: more readers (name -> a dir of <split>/<method>/report.json, e.g. an eval-healed
    unit's healed/), paired with this unit's original like its own conversions."""
    from rearqa.eval.compare import compare_reports

    info = json.loads((unit / "unit.json").read_text())
    method = info["method"]
    settings = ["original", *info.get("settings", "").split()]
    dirs = {s: unit / s for s in settings} | (extra or {})
    splits = sorted({p.parent.parent.name for p in unit.glob(f"original/*/{method}/report.json")})
    readers, pairs = [], []
    for split in splits:
        found = {s: d / split / method for s, d in dirs.items()
                 if (d / split / method / "report.json").is_file()}
        for setting, path in found.items():
            report = json.loads((path / "report.json").read_text())
            agg = report["aggregate"]["all"]
            backbone = report["rows"][0].get("backbone", "") if report["rows"] else ""
            readers.append({"source": info["name"], "method": method, "split": split,
                            "reader": setting, "backbone": backbone, "n": agg["n"],
                            **{m: agg[m] for m in METRICS},
                            "seconds_per_question": report.get("seconds_per_question")})
        others = [s for s in found if s != "original"]
        if "original" not in found or not others:
            continue
        result = compare_reports([found["original"], *(found[s] for s in others)], metrics=METRICS,
                                 n_resamples=10000)
        for setting, pair in zip(others, result["pairs"]):
            for metric in METRICS:
                d = pair["groups"]["all"][metric]
                pairs.append({"source": info["name"], "method": method, "split": split,
                              "reader": setting, "metric": metric, "n": d["n"], "diff": d["diff"],
                              "low": d["low"], "high": d["high"]})
    return readers, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("units", nargs="+", type=Path, help="eval-mla unit dirs (extracted archives)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=DIR",
                    help="another reader's reports (DIR/<split>/<method>/report.json, e.g. an "
                         "eval-healed unit's healed/), paired with the first unit's original")
    ap.add_argument("--out", type=Path, help="JSON of both tables")
    args = ap.parse_args()
    extra = {name: Path(d) for name, _, d in (e.partition("=") for e in args.extra)}
    readers, pairs = [], []
    for i, unit in enumerate(args.units):
        r, p = unit_rows(unit, extra if i == 0 else None)
        readers += r
        pairs += p
    print("| source | set | reader | n | EM | F1 | contained | s/question |\n|---|---|---|---|---|---|---|---|")
    for r in readers:
        sec = f"{r['seconds_per_question']:.4f}" if r["seconds_per_question"] else "-"
        print(f"| {r['source']} ({r['method']}) | {r['split']} | {r['reader']} | {r['n']} | {r['em']:.3f} "
              f"| {r['f1']:.3f} | {r['contained']:.3f} | {sec} |")
    print("\n| source | set | reader - original | metric | n | diff (points) | 95% CI |\n|---|---|---|---|---|---|---|")
    for p in pairs:
        print(f"| {p['source']} | {p['split']} | {p['reader']} | {p['metric']} | {p['n']} | "
              f"{100 * p['diff']:+.1f} | [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}] |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"readers": readers, "paired": pairs}, indent=1) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
