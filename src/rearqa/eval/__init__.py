"""Evaluation of rearqa pipelines on open-domain QA sets.

- `normalize`: SQuAD/DPR answer normalisation and matching, answer types;
- `metrics`: exact match, token F1, answer-contained, length, answer-recall@k, registry;
- `datasets`: JSONL question files, named data sets, the answerable subset;
- `bootstrap`: bootstrap and paired-bootstrap confidence intervals;
- `runner`: resumable batch evaluation writing per-question rows and reports;
- `compare`: paired comparison of reports; `report`: the json/md/png writers.
"""
