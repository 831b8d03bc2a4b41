"""Issue 14's passage-order table: one reader's answers with its top-k passages in retrieval order,
reversed and shuffled, each order paired with retrieval order on the same questions.

    python scripts/passage_order_report.py --runs runs/order-cpu --method rag-ft \
        --reference nq-test=docs/results/protocol/eval-test-ragft-s0/nq-test/rag-ft/rows.jsonl.gz \
        --out docs/results/passage_order/ragft-cpu-vllm.json

RUNS holds one snapshot-runner run per split and order, RUNS/<split>/<order>/<method>/ (order
with ":" as "-": shuffled-0), as `python -m rearqa.eval.rear_eval --passage-order ORDER` writes
them (or archived as rows.jsonl.gz: docs/results/passage_order/ragft-cpu-vllm/). For each split, and for the splits pooled: each order's EM / F1 / contained, the paired
bootstrap of its difference from retrieval order (95%), the share of answers whose text changed,
EM by where the reader read the first answer-bearing passage (1st, 2nd, ... of k), and, within
questions whose k passages hold the answer in exactly one, EM when the orders put that passage
first against when they put it last (`first_against_last`); for a reader with a rank head (REAR),
how far each passage's relevance score moved from its retrieval-order value. With `--against RUNS:METHOD`, each
order is also paired with another reader's run of the same order (REAR against rag-ft). With
`--reference SPLIT=ROWS`, the retrieval-order answers are also paired with another run of the
same reader on the same questions (e.g. the transformers engine on the GPU), to say how far the
engines agree. Prints markdown tables and writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.eval.compare import load_run_rows  # noqa: E402
from rearqa.eval.passage_order import (first_against_last, metric_by_answer_position,  # noqa: E402
                                       order_effects, relevance_shift)

METRICS = ("em", "f1", "contained")
POOLED = "pooled"


def order_name(directory: str) -> str:
    kind, _, seed = directory.partition("-")
    return f"{kind}:{seed}" if seed else kind


def read_runs(runs: Path, method: str) -> dict[str, dict[str, list[dict]]]:
    """{split: {order: rows}} of every finished run under RUNS: a run dir with its report.json, or
    one archived as rows.jsonl.gz (docs/results/passage_order/)."""
    found: dict[str, dict[str, list[dict]]] = {}
    finished = {path.parent for pattern in ("report.json", "rows.jsonl.gz")
                for path in runs.glob(f"*/*/{method}/{pattern}")}
    for run_dir in sorted(finished):
        split, order = run_dir.parent.parent.name, order_name(run_dir.parent.name)
        found.setdefault(split, {})[order] = load_run_rows(run_dir)
    if not found:
        raise SystemExit(f"no finished run under {runs}/<split>/<order>/{method}/ (report.json or rows.jsonl.gz)")
    return found


def split_table(orders: dict[str, list[dict]], resamples: int) -> dict:
    if "retrieval" not in orders:
        raise SystemExit(f"no retrieval-order run to pair with among {sorted(orders)}")
    base = orders["retrieval"]
    table = {}
    for order, rows in orders.items():
        entry = {"n": len(rows), **{m: sum(float(r[m]) for r in rows) / len(rows) for m in METRICS},
                 "em_by_answer_position": metric_by_answer_position(rows)}
        if order != "retrieval":
            entry["vs_retrieval"] = order_effects(base, rows, METRICS, resamples)
            shift = relevance_shift(base, rows)
            if shift is not None:  # a reader with a rank head: did its judgments move?
                entry["vs_retrieval"]["relevance_shift"] = shift
        table[order] = entry
    return table


def pooled_orders(by_split: dict[str, dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Each order's rows of every split that ran it (ids are unique across splits)."""
    common = set.intersection(*(set(orders) for orders in by_split.values()))
    return {order: [row for orders in by_split.values() for row in orders[order]]
            for order in sorted(common, key=lambda o: (o != "retrieval", o))}


def against(mine: dict[str, dict[str, list[dict]]], other: dict[str, dict[str, list[dict]]],
            resamples: int) -> dict[str, dict]:
    """{split (and pooled): {order: this reader's rows paired with the other reader's (the baseline)
    in the same order}}, over the splits and orders both ran."""
    shared = {split: [order for order in orders if order in other.get(split, {})]
              for split, orders in mine.items()}
    shared = {split: orders for split, orders in shared.items() if orders}
    tables = {split: {order: order_effects(other[split][order], mine[split][order], METRICS, resamples)
                      for order in orders} for split, orders in shared.items()}
    if len(shared) > 1:
        ours, theirs = (pooled_orders({split: runs[split] for split in shared}) for runs in (mine, other))
        tables[POOLED] = {order: order_effects(theirs[order], rows, METRICS, resamples)
                          for order, rows in ours.items() if order in theirs}
    return tables


def position_effect(runs: list[list[dict]], resamples: int) -> dict | None:
    """first_against_last, or None when no question was read both ways (e.g. retrieval order only)."""
    try:
        return first_against_last(runs, n_resamples=resamples)
    except ValueError:
        return None


def reference_check(rows: list[dict], reference: list[dict], resamples: int) -> dict:
    """The retrieval-order answers against another run of the reader (`reference` the baseline)."""
    effects = order_effects(reference, rows, METRICS, resamples)
    return {"n": effects["n"], "identical": 1.0 - effects["changed"], "metrics": effects["metrics"]}


def pct(value: float) -> str:
    return f"{100 * value:+.1f}"


def markdown(result: dict) -> str:
    lines = []
    for split, table in result["splits"].items():
        lines += [f"\n{split}", "",
                  "| order | n | EM | F1 | contained | EM vs retrieval (95% CI) | answers changed | "
                  "EM where the first answer passage was read (position: EM (n)) |",
                  "|---|---|---|---|---|---|---|---|"]
        for order, e in table.items():
            vs = e.get("vs_retrieval")
            diff = "-" if vs is None else (f"{pct(vs['metrics']['em']['diff'])} "
                                           f"[{pct(vs['metrics']['em']['low'])}, {pct(vs['metrics']['em']['high'])}]")
            changed = "-" if vs is None else f"{100 * vs['changed']:.1f}%"
            positions = ", ".join(f"{k}: {p['em']:.3f} ({p['n']})" for k, p in e["em_by_answer_position"].items())
            lines.append(f"| {order} | {e['n']} | {e['em']:.3f} | {e['f1']:.3f} | {e['contained']:.3f} | "
                         f"{diff} | {changed} | {positions} |")
        lines += [f"\n{order}: relevance scores against retrieval order, largest change "
                  f"{e['vs_retrieval']['relevance_shift']['max_abs']:.3g} over "
                  f"{e['vs_retrieval']['relevance_shift']['pairs']} (question, passage) pairs"
                  for order, e in table.items() if "relevance_shift" in e.get("vs_retrieval", {})]
    for split, e in result["first_against_last"].items():
        if e is None:
            continue
        lines.append(f"\n{split}, the one answer passage read first vs last (same questions, {e['n']}): "
                     f"EM {e['first']:.3f} vs {e['last']:.3f}, diff {pct(e['diff'])} [{pct(e['low'])}, {pct(e['high'])}]")
    if "against" in result:
        other = result["against"]
        lines += [f"\nagainst {other['method']} ({other['runs']}), the same order and questions:", "",
                  f"| split | order | n | {other['method']} EM | {result['method']} EM | diff (95% CI) | answers differ |",
                  "|---|---|---|---|---|---|---|"]
        for split, orders in other.items():
            if split in ("runs", "method"):
                continue
            for order, e in orders.items():
                em = e["metrics"]["em"]
                lines.append(f"| {split} | {order} | {e['n']} | {em['mean_a']:.3f} | {em['mean_b']:.3f} | "
                             f"{pct(em['diff'])} [{pct(em['low'])}, {pct(em['high'])}] | {100 * e['changed']:.1f}% |")
    for split, check in result.get("reference", {}).items():
        em = check["metrics"]["em"]
        lines.append(f"\n{split}, retrieval order against the reference: {check['n']} questions, "
                     f"{100 * check['identical']:.1f}% identical answers, EM {em['mean_a']:.3f} (reference) "
                     f"vs {em['mean_b']:.3f}, diff {pct(em['diff'])} [{pct(em['low'])}, {pct(em['high'])}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, required=True, help="RUNS/<split>/<order>/<method>/")
    p.add_argument("--method", default="rag-ft")
    p.add_argument("--reference", action="append", default=[], metavar="SPLIT=ROWS",
                   help="another run of the reader on a split (report.json, rows.jsonl.gz or its run dir)")
    p.add_argument("--against", metavar="RUNS:METHOD",
                   help="another reader's runs in the same layout: each order of each split paired "
                        "with that reader's run of the same order, on the questions both answered")
    p.add_argument("--resamples", type=int, default=10000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    by_split = read_runs(args.runs, args.method)
    groups = dict(sorted(by_split.items()))
    if len(by_split) > 1:
        groups[POOLED] = pooled_orders(by_split)
    splits = {split: split_table(orders, args.resamples) for split, orders in groups.items()}
    position = {split: position_effect(list(orders.values()), args.resamples) for split, orders in groups.items()}
    result = {"runs": str(args.runs), "method": args.method, "splits": splits,
              "first_against_last": position}
    if args.against:
        runs, _, method = args.against.rpartition(":")
        result["against"] = {"runs": runs, "method": method,
                             **against(by_split, read_runs(Path(runs), method), args.resamples)}
    references = {}
    for item in args.reference:
        split, _, path = item.partition("=")
        if split not in by_split or "retrieval" not in by_split[split]:
            raise SystemExit(f"--reference {item}: no retrieval-order run of {split} under {args.runs}")
        references[split] = {"rows": path, **reference_check(by_split[split]["retrieval"],
                                                               load_run_rows(Path(path)), args.resamples)}
    if references:
        result["reference"] = references
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(markdown(result))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
