"""Evaluation of rearqa pipelines on open-domain QA sets.

- `normalize`: SQuAD/DPR answer normalisation and matching, answer types;
- `metrics`: exact match, token F1, answer-contained, length, answer-recall@k, registry;
- `datasets`: JSONL question files, named data sets, the answerable subset;
- `bootstrap`: bootstrap and paired-bootstrap confidence intervals;
- `runner`: resumable batch evaluation writing per-question rows and reports;
- `compare`: paired comparison of reports; `report`: the json/md/png writers.
"""


def script_setup() -> None:
    """What the evaluation scripts' mains share: no hub, no tokenizer thread pools, log lines at
    $REARQA_LOG (default INFO)."""
    import logging
    import os

    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                        ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)
    logging.basicConfig(level=os.environ.get("REARQA_LOG", "INFO"),
                        format="%(levelname)s %(name)s: %(message)s")
