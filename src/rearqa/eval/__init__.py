"""Evaluation of rearqa pipelines on open-domain QA sets.

- `metrics`: exact match, token F1, answer-contained, length, answer-recall@k, registry;
- `datasets`: JSONL question files, named data sets, the answerable subset;
- `bootstrap`: bootstrap and paired-bootstrap confidence intervals;
- `runner`: resumable batch evaluation writing per-question rows and reports;
- `compare`: paired comparison of reports; `report`: the json/md/png writers;
- `bundle`: retrieval snapshots, so the reader can be evaluated where no index is;
- `rear_eval` (the command) over `rear_settings` (its typed settings and the reader-builder
  registry), `rear_runs` (each method's reader through the runner on a snapshot),
  `rear_rank_head` (REAR's relevance vs the retrievers' scores, `rank_metrics` the definitions)
  and `rear_routing` (judgments, threshold and routing choice); `select` picks settings on
  dev-select; `benchmarks`: the retrieval and index benchmarks.
"""


def script_setup() -> None:
    """What the evaluation scripts' mains share: no hub, no tokenizer thread pools, log lines at
    $REARQA_LOG (default INFO)."""
    import os

    from rearqa.environment import configure_logging, set_offline_defaults

    set_offline_defaults()
    configure_logging(os.environ.get("REARQA_LOG") or "INFO")
