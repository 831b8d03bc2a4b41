"""Tables of the REAR GPU run (scripts/gpu_run.sh) for docs/rear.md, from the runs it brought back.

    python scripts/rear_report.py runs/gpu3 run2    # prints markdown, writes docs/results/rear-test-run2.json

<root>/test/<split>/<run>/<method>/report.json are the evaluation runs, <root>/test/<split>/rear/
rank_metrics.json REAR's rank-head metrics, <root>/train/<run>/train_log.jsonl the training logs
(a curve is drawn to docs/figures/rear-train-<name>.png, REAR's reliability and risk-coverage plots
are copied beside it). Paired bootstrap differences are REAR minus
each other run, on the questions both answered (all, and the answerable part).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rearqa.eval.compare import compare_reports
from rearqa.eval.report import new_figure, save_figure

SPLITS = ("nq-test", "tqa-test", "squad-test")
GROUPS = ("all", "answerable")
METRICS = ("em", "f1", "contained", "length")


def runs(split_dir: Path) -> dict[str, Path]:
    """run name -> method report dir, REAR first."""
    found = {f"{d.parent.name}/{d.name}": d
             for d in sorted(split_dir.glob("*/*")) if (d / "report.json").is_file()}
    rear = {k: v for k, v in found.items() if k == "rear/rear"}
    return {**rear, **{k: v for k, v in found.items() if k != "rear/rear"}}


def method_table(root: Path) -> tuple[list[dict], dict]:
    rows, pairs = [], {}
    for split in SPLITS:
        found = runs(root / "test" / split)
        if "rear/rear" not in found:
            continue
        for name, path in found.items():
            aggregate = json.loads((path / "report.json").read_text())["aggregate"]
            for group in GROUPS:
                a = aggregate[group]
                rows.append({"split": split, "run": name, "group": group, "n": a["n"],
                             **{m: a[m] for m in METRICS}})
        result = compare_reports([found["rear/rear"], *[p for n, p in found.items() if n != "rear/rear"]],
                                 metrics=("em", "f1"), n_resamples=10000)
        for pair, name in zip(result["pairs"], [n for n in found if n != "rear/rear"]):
            for group in GROUPS:
                em = pair["groups"][group]["em"]
                # compare_reports gives candidate - baseline with REAR as the baseline: flip it.
                pairs[f"{split} rear - {name} ({group})"] = {
                    "n": em["n"], "diff": -em["diff"], "low": -em["high"], "high": -em["low"]}
    return rows, pairs


def seed_means(root: Path) -> dict:
    """REAR minus each multi-seed baseline's per-question EM averaged over its seeds (runs named
    `<method>-s<N>/<method>`), paired bootstrap over questions; and the seeds' own EM spread."""
    import re
    import statistics

    from rearqa.eval.bootstrap import paired_bootstrap

    out = {}
    for split in SPLITS:
        found = runs(root / "test" / split)
        if "rear/rear" not in found:
            continue
        rear = {r["id"]: r for r in json.loads((found["rear/rear"] / "report.json").read_text())["rows"]}
        by_method: dict[str, list[Path]] = {}
        for name, path in found.items():
            m = re.fullmatch(r"(.+)-s\d+/\1", name)
            if m:
                by_method.setdefault(m.group(1), []).append(path)
        for method, paths in by_method.items():
            seeds = [{r["id"]: r for r in json.loads((p / "report.json").read_text())["rows"]}
                     for p in paths]
            ids = [q for q in rear if all(q in s for s in seeds)]
            for group in GROUPS:
                chosen = [q for q in ids if group == "all" or rear[q].get("answerable")]
                mean = [statistics.fmean(s[q]["em"] for s in seeds) for q in chosen]
                res = paired_bootstrap(mean, [rear[q]["em"] for q in chosen], 10000, 0)
                per_seed = [statistics.fmean(s[q]["em"] for q in chosen) for s in seeds]
                out[f"{split} rear - {method} mean of {len(seeds)} seeds ({group})"] = {
                    "n": res["n"], "diff": res["diff"], "low": res["low"], "high": res["high"],
                    "baseline_seed_em": per_seed, "rear_em": res["mean_b"]}
    return out


def auc_table(root: Path) -> list[dict]:
    out = []
    for split in SPLITS:
        path = root / "test" / split / "rear" / "rank_metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        for group in ("other", "numeric"):
            g = metrics["groups"].get(group)
            if not g:
                continue
            for scorer, values in g["auc"]["scorers"].items():
                ece = g["calibration"].get(scorer, {}).get("ece")
                out.append({"split": split, "group": group, "scorer": scorer,
                            "pooled": values["pooled"], "per_question": {
                                k: v for k, v in values["per_question"].items() if k != "per_question"},
                            "ece": ece})
    return out


def rank_windows(run: Path, records: list[dict], window: int = 10) -> dict:
    """A REAR run's rank loss per stage, mean of its first and last `window` steps, beside the
    BCE of a constant prediction at the positives' base rate (from data_stats.json)."""
    import math

    out = {}
    for stage in ("warmup", "main"):
        losses = [r["rank"] for r in records if r["stage"] == stage]
        if losses:
            out[f"{stage}_rank_first{window}"] = sum(losses[:window]) / len(losses[:window])
            out[f"{stage}_rank_last{window}"] = sum(losses[-window:]) / len(losses[-window:])
    stats = run / "data_stats.json"
    if out and stats.is_file():
        data = json.loads(stats.read_text())
        p = data["mean_positives_per_group"] * data["questions"] / data["passages"]
        out["positive_rate"] = p
        out["base_rate_bce"] = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    return out


def train_curve(root: Path, out: Path) -> dict:
    fig, ax = new_figure(7, 4)
    summary = {}
    for log in sorted((root / "train").glob("*/train_log.jsonl")):
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if not (log.parent / "summary.json").is_file():
            continue  # a run that did not finish (out of GPU memory beside the others)
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["lm"] for r in records], label=f"{log.parent.name} LM", lw=0.8)
        if any(r["rank"] for r in records):
            ax.plot(steps, [r["rank"] for r in records], label=f"{log.parent.name} rank", lw=0.8)
        summary[log.parent.name] = {"steps": records[-1]["step"], "tokens": records[-1]["tokens"],
                                    "seconds": records[-1]["seconds"], "last_lm": records[-1]["lm"],
                                    "last_rank": records[-1]["rank"], **rank_windows(log.parent, records)}
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, ax, out, "REAR and baseline training losses (GPU run)")
    return summary


def main() -> None:
    import shutil

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu3")
    name = sys.argv[2] if len(sys.argv) > 2 else "run2"
    rows, pairs = method_table(root)
    seeded = seed_means(root)
    aucs = auc_table(root)
    figures = Path("docs/figures")
    curve = train_curve(root, figures / f"rear-train-{name}.png")
    for split, short in (("nq-test", "nq"), ("tqa-test", "tqa")):
        for plot in ("reliability", "risk_coverage"):
            found = root / "test" / split / "rear" / f"{plot}.png"
            if found.is_file():
                shutil.copy(found, figures / f"rear-{plot.replace('_', '-')}-{short}-{name}.png")
    Path("docs/results").mkdir(parents=True, exist_ok=True)
    Path(f"docs/results/rear-test-{name}.json").write_text(json.dumps(
        {"methods": rows, "paired_em": pairs, "paired_em_seed_mean": seeded, "rank_auc": aucs, "training": curve}, indent=1) + "\n")
    print("| set | run | group | n | EM | F1 | contained | words |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['split']} | {r['run']} | {r['group']} | {r['n']} | {r['em']:.3f} | {r['f1']:.3f} "
              f"| {r['contained']:.3f} | {r['length']:.1f} |")
    print("\n| paired EM difference | n | diff | 95% CI |\n|---|---|---|---|")
    for label, p in pairs.items():
        print(f"| {label} | {p['n']} | {p['diff']:+.3f} | [{p['low']:+.3f}, {p['high']:+.3f}] |")
    print("\n| REAR minus the seeds' mean | n | diff | 95% CI | seeds' EM |\n|---|---|---|---|---|")
    for label, p in seeded.items():
        em = ", ".join(f"{v:.3f}" for v in p["baseline_seed_em"])
        print(f"| {label} | {p['n']} | {p['diff']:+.3f} | [{p['low']:+.3f}, {p['high']:+.3f}] | {em} |")
    print("\n| set | questions | scorer | pooled AUC [95% CI] | per-question AUC (n) | ECE |\n|---|---|---|---|---|---|")
    for a in aucs:
        p, q = a["pooled"], a["per_question"]
        ece = f"{a['ece']:.3f}" if a["ece"] is not None else "-"
        print(f"| {a['split']} | {a['group']} | {a['scorer']} | {p['value']:.3f} [{p['low']:.3f}, "
              f"{p['high']:.3f}] | {q['value']:.3f} ({q['n_questions']}) | {ece} |")
    print("\ntraining:", json.dumps(curve))


if __name__ == "__main__":
    main()
