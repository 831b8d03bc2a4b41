"""Issue 15's comparison: each LoRA-family method against plain LoRA at equal budgets, REAR training
(docs/adapters.md "Equal budgets"). Reads the recorded device units (scripts/gpu_plan.py record):

    python scripts/gpu_plan.py record runs/gpuN/units docs/results/adapters/budget
    python scripts/adapter_compare.py slim docs/results/adapters/budget
    python scripts/adapter_compare.py table docs/results/adapters/budget \
        --out docs/results/adapters/equal-budget-runs.json

`slim` rewrites each recorded eval-test unit's rows.jsonl.gz to the columns this table reads
(the per-question scores, and per passage REAR's relevance and whether it holds a gold answer),
dropping what every run shares (the retrieved ids, titles and scores: the retriever does not
depend on the reader) and the per-passage answer strings; the full rows stay in the device
archive. A rows file already slim is left as it is.

`table`, per run (train-rear-<method>-s<N> with eval-test-<method>-s<N>): trainable parameters
(docs/results/adapters/equal-budget.json), micro-batch, the GPU (unit.json's `gpu`, or the
records' machines.json for units from before it was written), step time, peak memory, dev-select EM and
relevance AUC (the unit's choice), test EM and pooled relevance AUC on the answerable NQ and
TriviaQA questions (the test units run with EVAL_ARGS=--answerable-only; a unit over all
questions is read on its answerable ones). Per method against lora: each question's EM averaged
over the method's seeds minus over lora's seeds, on the seeds both have, with a 95% paired
bootstrap interval (10,000 question resamples); "as good" when the interval's lower bound is at
least -1 point on both sets, "better" on a set when its interval lies above 0 ("no (worse)" when it
lies below 0: the method is judged worse there, `worse` in the JSON). A method with fewer
than 3 seeds, or seeds without a test unit, is reported as incomplete, never judged.

The interval of the verdict (issue 15's definition) resamples questions only, so it holds each
side's seeds fixed: two seeds of one method can differ by an interval that excludes 0 (docs/
adapters.md, session 23). Beside it each set also gets `seeds_low`/`seeds_high`: a two-level
bootstrap that draws each side's seeds with replacement before the questions
(`rearqa.eval.bootstrap.seed_question_bootstrap`), to show how much of a difference the seeds'
spread could explain. It informs; the verdict stays the issue's. A third table (`seed_pairs` in the
JSON) pairs each method's tested seeds against each other, set by set: how far two trainings of
one method can land apart.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SETS = ("nq-test", "tqa-test")
SEEDS_NEEDED = 3
BUDGETS = Path(__file__).resolve().parents[1] / "docs" / "results" / "adapters" / "equal-budget.json"
KEEP = ("id", "answerable", "answer_type", "prediction", "abstained", "from_own_knowledge", "em",
        "f1", "contained", "first_hit_rank")
RUN = re.compile(r"^(train-rear|eval-test)-(.+)-s(\d+)$")
# The card each machine of a recorded unit had, for units recorded before gpu_unit.sh wrote it
# into unit.json ("gpu"): the sessions' calls said it (docs/gpu-plan.md).
MACHINES = "machines.json"


def slim_row(row: dict) -> dict:
    """The columns the table reads; a slim row maps to itself."""
    if "relevance" in row and "citations" not in row:
        return row
    out = {k: row[k] for k in KEEP if k in row}
    cites = row.get("citations") or []
    out["relevance"] = [c.get("relevance") for c in cites]
    out["judgment"] = [c.get("judgment") for c in cites]
    out["has_answer"] = row.get("retrieved_has_answer", [])[: len(cites)]
    return out


def slim(records: Path) -> None:
    for rows in sorted(records.glob("eval-test-*/*/*/rows.jsonl.gz")):
        before = rows.stat().st_size
        with gzip.open(rows, "rt") as f:
            data = [slim_row(json.loads(line)) for line in f]
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data).encode()
        rows.write_bytes(gzip.compress(payload, mtime=0))
        print(f"{rows}: {before / 2**20:.1f} -> {rows.stat().st_size / 2**20:.1f} MiB")


def read_rows(path: Path) -> dict[str, dict]:
    with gzip.open(path, "rt") as f:
        return {r["id"]: r for r in map(json.loads, f)}


def peak_gib(log: Path) -> float | None:
    found = re.search(r"peak GPU memory ([\d.]+) GiB", log.read_text()) if log.is_file() else None
    return float(found.group(1)) if found else None


def pooled_auc(rows: list[dict]) -> float | None:
    """REAR's relevance against "the passage holds a gold answer", pooled over the rows' passages."""
    from rearqa.eval.rank_metrics import roc_auc

    scores = [s for r in rows for s in r.get("relevance", [])]
    labels = [bool(h) for r in rows for h in r.get("has_answer", [])]
    if len(scores) != len(labels) or None in scores or len(set(labels)) < 2:
        return None
    return float(roc_auc(scores, labels))


def control_budget(budgets: dict[str, int], method: str) -> int | None:
    """A method's budget; a control named METHOD-TAG (lora-mb32: another micro-batch,
    hydra-outscale: the layer's first form) has its method's, the longest such METHOD."""
    if method in budgets:
        return budgets[method]
    owners = [m for m in budgets if method.startswith(m + "-")]
    return budgets[max(owners, key=len)] if owners else None


def card(info: dict, machines: dict[str, str]) -> str:
    """The GPU a unit ran on, short ("H100"), from its unit.json or the machines file; "-" unknown."""
    name = info.get("gpu") or machines.get(info.get("machine", ""), "")
    found = re.search(r"\b[A-Z]\d{2,4}\b", name)
    return found.group(0) if found else "-"


def collect(records: Path) -> dict[str, dict[int, dict]]:
    """method -> seed -> the run's row (train facts, and test facts when its eval unit is there)."""
    budgets = {m["method"]: m["trainable"] for m in json.loads(BUDGETS.read_text())["methods"]}
    machines_file = records / MACHINES
    machines = json.loads(machines_file.read_text())["machines"] if machines_file.is_file() else {}
    runs: dict[str, dict[int, dict]] = {}
    for unit in sorted(records.iterdir()):
        match = RUN.match(unit.name)
        if not match or match.group(1) != "train-rear":
            continue
        method, seed = match.group(2), int(match.group(3))
        info = json.loads((unit / "unit.json").read_text())
        if info.get("status") != "done":
            continue
        cfg = json.loads((unit / "train" / "train_config.json").read_text())
        summary = json.loads((unit / "train" / "summary.json").read_text())
        sel = info["selection"]
        trainable = control_budget(budgets, method)
        run = {"method": method, "seed": seed, "trainable": trainable, "gpu": card(info, machines),
               "micro_batch": f"{cfg['batch']}x{cfg['grad_accum']}", "steps": summary["steps"],
               "tokens": summary["tokens"], "step_s": summary["seconds"] / summary["steps"],
               "peak_gib": peak_gib(unit / "train.log"), "select_em": sel["em"],
               "select_auc": sel["relevance_auc"], "rows": {}}
        test = records / f"eval-test-{method}-s{seed}"
        for split in SETS:
            rows_file = test / split / "rear" / "rows.jsonl.gz"
            if rows_file.is_file():
                rows = read_rows(rows_file)
                answerable = [r for r in rows.values() if r.get("answerable")]
                run["rows"][split] = rows
                run[f"{split}_em"] = statistics.fmean(r["em"] for r in answerable)
                run[f"{split}_n"] = len(answerable)
                run[f"{split}_auc"] = pooled_auc(answerable)
        runs.setdefault(method, {})[seed] = run
    return runs


def tested_seeds(seeds: dict[int, dict]) -> list[int]:
    """A method's seeds whose test unit read every set of SETS, in seed order."""
    return sorted(s for s in seeds if set(SETS) <= set(seeds[s]["rows"]))


def compare(runs: dict[str, dict[int, dict]]) -> list[dict]:
    from rearqa.eval.bootstrap import paired_bootstrap, seed_question_bootstrap

    out = []
    ref = runs.get("lora", {})
    for method, seeds in sorted(runs.items()):
        if method == "lora":
            continue
        entry: dict = {"method": method, "seeds": sorted(seeds), "lora_seeds": sorted(ref)}
        tested, ref_tested = tested_seeds(seeds), tested_seeds(ref)
        entry["complete"] = len(tested) >= SEEDS_NEEDED and len(ref_tested) >= SEEDS_NEEDED
        entry["sets"], entry["as_good"], entry["better"], entry["worse"] = {}, None, None, None
        entry["tested_seeds"], entry["lora_tested_seeds"] = tested, ref_tested
        if not tested or not ref_tested:
            out.append(entry)
            continue
        for split in SETS:
            mine = [seeds[s]["rows"][split] for s in tested]
            base = [ref[s]["rows"][split] for s in ref_tested]
            ids = [q for q, r in base[0].items() if r.get("answerable") and all(q in x for x in mine + base)]
            base_runs = [[x[q]["em"] for q in ids] for x in base]  # run -> per-question EM
            mine_runs = [[x[q]["em"] for q in ids] for x in mine]
            res = paired_bootstrap([statistics.fmean(s) for s in zip(*base_runs)],  # seed means
                                   [statistics.fmean(s) for s in zip(*mine_runs)], 10000, 0)
            both = seed_question_bootstrap(base_runs, mine_runs, 10000, 0)
            entry["sets"][split] = {"n": res["n"], "method_em": res["mean_b"], "lora_em": res["mean_a"],
                                    "diff": res["diff"], "low": res["low"], "high": res["high"],
                                    "seeds_low": both["low"], "seeds_high": both["high"]}
        sets = entry["sets"].values()
        entry["as_good"] = all(s["low"] >= -0.01 for s in sets) if entry["complete"] else None
        entry["better"] = ({split: x["low"] > 0 for split, x in entry["sets"].items()}
                           if entry["complete"] else None)
        entry["worse"] = ({split: x["high"] < 0 for split, x in entry["sets"].items()}
                          if entry["complete"] else None)  # the interval excludes 0 from below
        out.append(entry)
    return out


def seed_pairs(runs: dict[str, dict[int, dict]]) -> list[dict]:
    """Per method, each pair of its tested seeds against each other, set by set: the later seed's EM
    minus the earlier's on the answerable questions both read, with a 95% paired bootstrap over
    questions. How far two trainings of one method apart can land, at fixed weights."""
    from rearqa.eval.bootstrap import paired_bootstrap

    out = []
    for method, seeds in sorted(runs.items()):
        tested = tested_seeds(seeds)
        for i, first in enumerate(tested):
            for second in tested[i + 1:]:
                entry = {"method": method, "seeds": [first, second], "sets": {}}
                for split in SETS:
                    a, b = seeds[first]["rows"][split], seeds[second]["rows"][split]
                    ids = [q for q, r in a.items() if r.get("answerable") and q in b]
                    res = paired_bootstrap([a[q]["em"] for q in ids], [b[q]["em"] for q in ids], 10000, 0)
                    entry["sets"][split] = {"n": res["n"], "diff": res["diff"], "low": res["low"],
                                            "high": res["high"]}
                out.append(entry)
    return out


def verdict(value: bool | dict | None, worse: dict | None = None) -> str:
    """A verdict cell; per set for "better", where `worse` marks a set whose interval lies below 0."""
    if value is None:
        return "not judged (fewer than 3 tested seeds)"
    if isinstance(value, dict):
        marks = {split: "yes" if v else "no (worse)" if (worse or {}).get(split) else "no" for split, v in value.items()}
        return ", ".join(f"{split.split('-')[0]} {mark}" for split, mark in marks.items())
    return "yes" if value else "no"


def interval_cell(x: dict) -> str:
    """A paired difference with its 95% interval, in EM points: "+0.4 [-0.5, +1.3]"."""
    return f"{100 * x['diff']:+.1f} [{100 * x['low']:+.1f}, {100 * x['high']:+.1f}]"


def table(records: Path, out: Path | None) -> None:
    runs = collect(records)
    print("| method | seed | trainable | micro-batch | GPU | s/step | peak GiB | dev-select EM | dev-select AUC "
          "| NQ EM | TQA EM | test AUC NQ / TQA |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    flat = []
    for method, seeds in sorted(runs.items(), key=lambda kv: (kv[0] != "lora", kv[0])):
        for seed, r in sorted(seeds.items()):
            em = " | ".join(f"{r[f'{s}_em']:.3f}" if f"{s}_em" in r else "-" for s in SETS)
            auc = " / ".join(f"{r[f'{s}_auc']:.3f}" if r.get(f"{s}_auc") else "-" for s in SETS)
            peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] else "-"
            trainable = f"{r['trainable']:,}" if r["trainable"] else "-"
            print(f"| {method} | {seed} | {trainable} | {r['micro_batch']} | {r['gpu']} | {r['step_s']:.2f} | {peak} "
                  f"| {r['select_em']:.3f} | {r['select_auc']:.3f} | {em} | {auc} |")
            flat.append({k: v for k, v in r.items() if k != "rows"})
    pairs = compare(runs)
    print("\n| method | seeds (lora) | NQ: method - lora, points [95%] | TQA | as good as lora | better "
          "| NQ, TQA: seeds resampled too |\n|---|---|---|---|---|---|---|")
    for p in pairs:
        sets = [s for s in (p["sets"].get(x) for x in SETS) if s]
        cells = [interval_cell(s) for s in sets]
        wide = ", ".join(f"[{100 * s['seeds_low']:+.1f}, {100 * s['seeds_high']:+.1f}]" for s in sets) or "-"
        print(f"| {p['method']} | {len(p['tested_seeds'])} ({len(p['lora_tested_seeds'])}) "
              f"| {' | '.join(cells or ['-', '-'])} | {verdict(p.get('as_good'))} "
              f"| {verdict(p.get('better'), p.get('worse'))} | {wide} |")
    within = seed_pairs(runs)
    print("\n| method | seeds | NQ: second - first, points [95%] | TQA |\n|---|---|---|---|")
    for p in within:
        cells = [interval_cell(p["sets"][split]) for split in SETS]
        print(f"| {p['method']} | s{p['seeds'][1]} - s{p['seeds'][0]} | {' | '.join(cells)} |")
    if out:
        out.write_text(json.dumps({"runs": flat, "against_lora": pairs, "seed_pairs": within}, indent=1) + "\n")
        print(f"\nwrote {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["slim", "table"])
    ap.add_argument("records", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not args.records.is_dir():
        sys.exit(f"{args.records}: no such directory of recorded units (scripts/gpu_plan.py record)")
    slim(args.records) if args.command == "slim" else table(args.records, args.out)


if __name__ == "__main__":
    main()
