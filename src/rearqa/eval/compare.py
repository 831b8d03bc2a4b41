"""Paired comparison of evaluation reports on the questions they share.

The first report is the baseline; each other report is compared with it per metric on exactly
the same questions (the ids present in every report), with a paired-bootstrap confidence
interval of the difference (see `bootstrap.paired_bootstrap`), overall, by answer type and over
the answerable part where the reports know it.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rearqa.eval.bootstrap import paired_bootstrap
from rearqa.eval.report import (ANSWER_METRICS, CI_METRICS, comparison_markdown, row_groups,
                                row_value, write_json)


def load_run_rows(path: str | Path) -> list[dict[str, Any]]:
    """A run's rows: from its report.json, or from rows.jsonl.gz where a finished run was archived
    that way (docs/results/: alone, or beside a report.json whose rows were taken out); `path` is
    either file or the run directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = next((path / name for name in ("report.json", "rows.jsonl.gz") if (path / name).is_file()),
                    path / "report.json")
    if not path.is_file():
        raise FileNotFoundError(f"report {path} does not exist; give a report.json, an archived "
                                "rows.jsonl.gz or their run directory")
    if path.name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    report = json.loads(path.read_text(encoding="utf-8"))
    if "rows" not in report and (path.parent / "rows.jsonl.gz").is_file():
        return load_run_rows(path.parent / "rows.jsonl.gz")
    return report["rows"]


def _check_metric(metric: str, row: dict[str, Any], path: Path) -> None:
    try:
        row_value(row, metric)
    except KeyError:
        recall = [f"recall@{k}" for k in row.get("recall", {})]
        valid = [m for m in ANSWER_METRICS if m in row] + recall
        raise ValueError(f"metric {metric!r} is not in the rows of {path}; valid metrics are "
                         f"{valid}") from None


def shared_question_ids(all_rows: Sequence[dict[str, dict[str, Any]]], names: Sequence[str]) -> list[str]:
    """The question ids every run answered, in the first (the baseline's) order; `all_rows` is each
    run's rows by id, `names` says which run is which in the errors. Refused when the runs share
    no question, or a shared question has other gold answers in one of them (another data set)."""
    shared_ids = set(all_rows[0]).intersection(*all_rows[1:])
    if not shared_ids:
        raise ValueError(f"reports {list(names)} share no question ids")
    order = [qid for qid in all_rows[0] if qid in shared_ids]
    for name, rows in zip(names[1:], all_rows[1:]):
        for qid in order:
            if rows[qid]["answers"] != all_rows[0][qid]["answers"]:
                raise ValueError(f"question {qid!r} has different gold answers in {names[0]} and "
                                 f"{name}: these reports are not on the same data set")
    return order


def compare_reports(report_paths: Sequence[str | Path],
                    metrics: Sequence[str] = CI_METRICS,
                    n_resamples: int = 10000, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """Compare reports[1:] against the baseline reports[0], paired on their shared question ids.

    Returns {"reports": [{report, n_rows, dropped}], "n_shared", "metrics", "pairs": [{baseline,
    candidate, groups: {group: {metric: paired_bootstrap result}}}], ...}.
    """
    paths = [Path(p) for p in report_paths]
    if len(paths) < 2:
        raise ValueError(f"got {len(paths)} report(s); give a baseline and at least one other")
    all_rows = [{row["id"]: row for row in load_run_rows(p)} for p in paths]
    order = shared_question_ids(all_rows, [str(p) for p in paths])
    for metric in metrics:
        for path, rows in zip(paths, all_rows):
            _check_metric(metric, rows[order[0]], path)

    # Groups come from the baseline's rows (answer type and answerable flag are per question).
    baseline_rows = [all_rows[0][qid] for qid in order]
    groups = row_groups(baseline_rows, answerable_groups=not all(
        r.get("answerable") for r in baseline_rows))  # an all-answerable run has no such split
    pairs = []
    for path, rows in zip(paths[1:], all_rows[1:]):
        pair_groups = {}
        for group, group_rows in groups.items():
            ids = [r["id"] for r in group_rows]
            pair_groups[group] = {metric: paired_bootstrap(
                [row_value(all_rows[0][qid], metric) for qid in ids],
                [row_value(rows[qid], metric) for qid in ids], n_resamples, seed, ci)
                for metric in metrics}
        pairs.append({"baseline": str(paths[0]), "candidate": str(path), "groups": pair_groups})
    return {"reports": [{"report": str(p), "n_rows": len(rows), "dropped": len(rows) - len(order)}
                        for p, rows in zip(paths, all_rows)],
            "n_shared": len(order), "shared_ids": order, "metrics": list(metrics),
            "n_resamples": n_resamples, "seed": seed, "ci": ci, "pairs": pairs}


def write_comparison(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write comparison.json and comparison.md into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(result, out_dir / "comparison.json"),
             "md": out_dir / "comparison.md"}
    paths["md"].write_text(comparison_markdown(result), encoding="utf-8")
    return paths
