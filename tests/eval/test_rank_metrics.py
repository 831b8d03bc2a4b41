"""Rank-head metrics on hand-computed cases: AUC with ties, question bootstrap, ECE, Platt, risk-coverage."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from rearqa.eval.rank_metrics import (auc_comparison, expected_calibration_error, fit_platt,
                                      per_question_auc, platt_probs, plot_reliability,
                                      plot_risk_coverage, reliability_bins, risk_coverage, roc_auc,
                                      sigmoid)


def brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_auc_separated_reversed_tied():
    labels = [0, 0, 1, 1]
    assert roc_auc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert roc_auc([0.5] * 4, labels) == 0.5
    assert roc_auc([1, 2, 2, 3], labels) == 0.875  # one tied pair counts half
    assert roc_auc([1, 1, 2, 2], [0, 1, 0, 1]) == 0.5


def test_auc_matches_the_pair_count_with_many_ties():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60), rng.random(60) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="positive and negative"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        roc_auc([0.1, 0.2], [1, 0, 1])


def test_per_question_auc_skips_one_class_questions():
    groups = [([3, 2, 1], [1, 0, 0]), ([1, 2], [1, 0]), ([5, 6], [0, 0])]
    result = per_question_auc(groups)
    assert result["per_question"] == [1.0, 0.0, None]
    assert (result["mean"], result["n_questions"]) == (0.5, 2)


def test_auc_comparison_resamples_questions_and_pairs_scorers():
    rng = np.random.default_rng(1)
    labels = [rng.random(5) < 0.4 for _ in range(40)]
    good = [(y + rng.normal(0, 0.5, 5), y) for y in labels]
    noise = [(rng.normal(0, 1, 5), y) for y in labels]
    result = auc_comparison({"good": good, "good again": good, "noise": noise}, n_resamples=200)
    pooled = result["scorers"]["good"]["pooled"]
    flat_s = np.concatenate([s for s, _ in good])
    flat_y = np.concatenate([y for _, y in good])
    assert pooled["value"] == pytest.approx(roc_auc(flat_s, flat_y))
    assert pooled["low"] <= pooled["value"] <= pooled["high"]
    same = result["differences"]["good again"]
    assert same["pooled"] == {"diff": 0.0, "low": 0.0, "high": 0.0, "of": "good again - good"}
    worse = result["differences"]["noise"]["pooled"]
    assert worse["diff"] < 0 and worse["high"] < 0
    assert result["n_pairs"] == 200 and result["n_questions"] == 40
    with pytest.raises(ValueError, match="same pairs"):
        auc_comparison({"a": good, "b": good[:-1]})


def test_weighted_auc_equals_auc_of_the_repeated_questions():
    from rearqa.eval.rank_metrics import _RankedPairs

    groups = [([0.2, 0.9, 0.2], [0, 1, 1]), ([0.5, 0.1], [1, 0]), ([0.3, 0.3], [0, 1])]
    counts = np.array([2, 0, 3])
    sizes = [len(y) for _, y in groups]
    ranked = _RankedPairs(np.concatenate([s for s, _ in groups]), np.concatenate([y for _, y in groups]))
    repeated = [g for g, c in zip(groups, counts) for _ in range(c)]
    expected = roc_auc(np.concatenate([s for s, _ in repeated]), np.concatenate([y for _, y in repeated]))
    assert ranked.auc(np.repeat(counts, sizes).astype(float)) == pytest.approx(expected)


def test_ece_on_a_constructed_example():
    probs = [0.05] * 10 + [0.95] * 10 + [0.7] * 10
    labels = [1] + [0] * 9 + [1] * 9 + [0] + [1] * 7 + [0] * 3
    # bins: 0.05 vs 0.1 positive, 0.95 vs 0.9, 0.7 vs 0.7 -> (10*.05 + 10*.05 + 0) / 30
    assert expected_calibration_error(probs, labels) == pytest.approx(1 / 30)
    bins = reliability_bins(probs, labels)
    assert [(b["low"], b["n"]) for b in bins] == [(0.0, 10), (0.7, 10), (0.9, 10)]
    assert reliability_bins([1.0, 0.0], [1, 0], n_bins=4)[-1]["high"] == 1.0
    assert expected_calibration_error([0.7] * 10, [1] * 7 + [0] * 3) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([1.5], [1])


def test_platt_recovers_a_logistic_map():
    rng = np.random.default_rng(2)
    scores = rng.normal(3.0, 2.0, 20000)
    labels = rng.random(scores.size) < sigmoid(1.5 * scores - 4.0)
    a, b = fit_platt(scores, labels)
    assert (a, b) == (pytest.approx(1.5, abs=0.1), pytest.approx(-4.0, abs=0.25))
    assert expected_calibration_error(platt_probs(scores, (a, b)), labels) < 0.02
    a_sep, _ = fit_platt([0, 1, 2, 3], [0, 0, 1, 1])  # separable: smoothed targets keep a finite
    assert np.isfinite(a_sep) and a_sep > 0


def test_risk_coverage():
    rc = risk_coverage([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    assert rc["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert rc["risk"] == pytest.approx([0, 0, 1 / 3, 1 / 2])
    assert rc["aurc"] == pytest.approx((1 / 3 + 1 / 2) / 4)
    rng = np.random.default_rng(3)
    correct = rng.random(50) < 0.5
    perfect = risk_coverage(correct + rng.random(50) * 0.1, correct)  # confident = correct
    assert np.all(np.diff(perfect["coverage"]) > 0) and perfect["coverage"][-1] == 1.0
    assert np.all(np.diff(perfect["risk"]) >= 0)  # an oracle's risk never falls as it answers more
    tied = risk_coverage([0.5] * 4, [1, 0, 0, 1])  # ties: one point, order-free
    assert (tied["coverage"], tied["risk"], tied["aurc"]) == ([1.0], [0.5], 0.5)


def test_plots_are_written(tmp_path):
    bins = reliability_bins([0.1, 0.4, 0.8, 0.9], [0, 0, 1, 1])
    plot_reliability({"rear": {"bins": bins, "ece": 0.1}}, tmp_path / "rel.png", "reliability")
    plot_risk_coverage({"rear": risk_coverage([0.9, 0.1], [1, 0])}, tmp_path / "rc.png", "rc")
    assert (tmp_path / "rel.png").stat().st_size > 1000 and (tmp_path / "rc.png").stat().st_size > 1000


def test_rear_eval_path_imports_no_faiss_bm25s_or_gradio():
    code = ("import sys, rearqa.eval.rear_eval, rearqa.eval.bundle, rearqa.reader.rear.reader, "
            "rearqa.reader.finetuned; "
            "print([m for m in ('faiss', 'bm25s', 'gradio', 'sentence_transformers') if m in sys.modules])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- rear_eval end to end on a tiny snapshot and tiny models ------------------------------------


PASSAGES = {"h": "hamlet is a tragedy written by shakespeare .", "p": "paris is the capital of france",
            "l": "the band was born in london in the year", "r": "the river of the city"}
QUESTIONS = [("q1", "who wrote hamlet ?", ["shakespeare"]),
             ("q2", "what is the capital of france ?", ["paris"]),
             ("q3", "where was the band born ?", ["london"]),
             ("q4", "what river is in the city ?", ["the river"])]


def _tiny_snapshot(root):
    import json

    from rearqa.eval.bundle import write_jsonl_gz

    root.mkdir()
    write_jsonl_gz(root / "passages.jsonl.gz",
                   [{"id": i, "title": "", "text": t} for i, t in PASSAGES.items()])
    rows = []
    for n, (qid, question, answers) in enumerate(QUESTIONS):
        order = list(PASSAGES)[n:] + list(PASSAGES)[:n]
        rows.append({"id": qid, "question": question, "answers": answers, "answer_type": "other",
                     "answerable": True,
                     "rankings": {"dense": [[pid, 0.9 - 0.1 * j] for j, pid in enumerate(order)],
                                  "bm25": [[pid, 5.0 - j] for j, pid in enumerate(order[:2])]}})
    for split in ("nq-test", "nq-dev-select"):  # real split names: the runner knows them
        write_jsonl_gz(root / f"{split}.jsonl.gz", rows)
    (root / "meta.json").write_text(json.dumps({"splits": {"nq-test": 4, "nq-dev-select": 4}}))


def _tiny_models(tmp_path):
    import torch

    from rearqa.reader.rear import RearConfig, RearModel
    from rearqa.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    base = tiny_llama(len(tok), seed=3)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    model = RearModel.from_base(tiny_llama(len(tok), seed=3), tiny_tokenizer(), RearConfig())
    with torch.no_grad():
        model.causal_lm.get_output_embeddings().weight[model.token_ids.rank_score].normal_(std=1.0)
    model.save_pretrained(tmp_path / "rear")


def test_rear_eval_runs_methods_rank_metrics_and_threshold_choice(tmp_path, one_thread):
    import json

    from rearqa.eval import rear_eval

    _tiny_snapshot(tmp_path / "snap")
    _tiny_models(tmp_path)
    common = ["--snapshot", str(tmp_path / "snap"), "--checkpoint", str(tmp_path / "rear"),
              "--base-model", str(tmp_path / "base"), "--k", "3", "--batch-size", "2",
              "--max-new-tokens", "3", "--device", "cpu", "--resamples", "50"]
    rear_eval.main([*common, "--split", "nq-dev-select", "--choose-threshold",
                    "--grid-size", "5", "--out", str(tmp_path / "select")])
    selection = json.loads((tmp_path / "select" / "threshold_selection.json").read_text())
    assert len(selection["table"]) >= 2 * 2 and selection["chosen"]["routing"] in (
        "path_reliability", "knowledge_consistency")
    meta = json.loads((tmp_path / "rear" / "rear_config.json").read_text())
    assert meta["config"]["routing"]["threshold"] == selection["chosen"]["threshold"]
    assert meta["routing_selection"]["split"] == "nq-dev-select"
    platt = meta["config"]["relevance_platt"]  # fitted on the same dev-select pairs
    assert platt == [selection["calibration"]["a"], selection["calibration"]["b"]]

    rear_eval.main([*common, "--split", "nq-test", "--methods", "rear", "closed-book",
                    "--out", str(tmp_path / "run")])
    out = tmp_path / "run"
    for name in ("rank_metrics.json", "rank_metrics.md", "reliability.png", "risk_coverage.png",
                 "compare/comparison.json", "rear/report.json", "closed-book/report.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "rear" / "rows.jsonl").read_text().splitlines()]
    assert all(len(r["citations"]) == 3 and r["citations"][0]["judgment"] for r in rows)
    for c in rows[0]["citations"]:  # the relevance users see: the logit through the stored map
        assert c["probability"] == pytest.approx(1 / (1 + np.exp(-(platt[0] * c["relevance"] + platt[1]))))
    metrics = json.loads((out / "rank_metrics.json").read_text())
    assert "Platt map" in metrics["groups"]["other"]["calibration"]["REAR relevance"]["probability"]
    assert "REAR: the checkpoint's dev-select Platt map" in (out / "rank_metrics.md").read_text()
    scorers = metrics["groups"]["other"]["auc"]["scorers"]
    assert set(scorers) == {"REAR relevance", "dense cosine", "BM25"}
    assert scorers["dense cosine"]["pooled"]["value"] is not None
    assert metrics["groups"]["other"]["imputed_share"] == {"dense cosine": 0.0, "BM25": pytest.approx(1 / 3)}
    closed = [json.loads(line) for line in (out / "closed-book" / "rows.jsonl").read_text().splitlines()]
    assert all(r["passages_read"] == 0 for r in closed)


def test_select_chooses_among_rear_checkpoints_and_baseline_k_on_dev_select(tmp_path, one_thread):
    import json
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rearqa.eval import select

    _tiny_snapshot(tmp_path / "snap")
    _tiny_models(tmp_path)
    shutil.copytree(tmp_path / "rear", tmp_path / "rear2")
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), lora).save_pretrained(
        tmp_path / "adapter")
    common = ["--snapshot", str(tmp_path / "snap"), "--splits", "nq-dev-select",
              "--base-model", str(tmp_path / "base"), "--batch-size", "2", "--max-new-tokens", "3",
              "--device", "cpu", "--out", str(tmp_path / "out")]
    select.main([*common, "--rear", str(tmp_path / "rear"), str(tmp_path / "rear2"), "--rear-k", "3",
                 "--grid-size", "5", "--rag-ft", str(tmp_path / "adapter"), "--rag-ft-k", "1", "2"])
    result = json.loads((tmp_path / "out" / "selection.json").read_text())
    rear = result["rear"]
    assert [row["checkpoint"] for row in rear["table"]] == [str(tmp_path / "rear"), str(tmp_path / "rear2")]
    assert all(row["head"] == "linear" for row in rear["table"])
    for row in rear["table"]:  # the relevance AUC on dev-select is reported beside each candidate
        assert row["relevance_auc"] is None or 0.0 <= row["relevance_auc"] <= 1.0
        for key in ("dense_auc", "trusted_hit", "dense_top1_hit"):  # the dense cosine beside it
            assert row[key] is None or 0.0 <= row[key] <= 1.0
    chosen = rear["chosen"]
    meta = json.loads((tmp_path / chosen["checkpoint"] / "rear_config.json").read_text())
    assert meta["config"]["routing"]["threshold"] == chosen["threshold"]
    assert meta["routing_selection"]["splits"] == ["nq-dev-select"]
    calibration = meta.get("relevance_calibration")  # Platt map of the chosen head's dev-select logits
    assert calibration is not None and calibration == chosen["calibration"]
    assert calibration["method"] == "platt" and calibration["fitted_on"] == ["nq-dev-select"]
    assert 0 < calibration["positives"] < calibration["pairs"] == 4 * 3
    assert meta["config"]["relevance_platt"] == [calibration["a"], calibration["b"]]
    rag = result["rag-ft"]
    assert [(row["k"], row["n"]) for row in rag["table"]] == [(1, 4), (2, 4)]
    assert rag["chosen"] in rag["table"]
    with pytest.raises(SystemExit):  # settings are never chosen on test questions
        select.parse_args(["--snapshot", "s", "--splits", "nq-test", "--out", "o"])


def test_relevance_calibration_is_a_platt_map_of_both_labels_or_none():
    from rearqa.eval.rear_routing import relevance_calibration

    assert relevance_calibration([0.1, 0.2], [True, True], ["nq-dev-select"]) is None
    rng = np.random.default_rng(0)
    logits = rng.normal(size=4000)
    labels = rng.random(4000) < 1 / (1 + np.exp(-(2.0 * logits - 1.0)))
    fit = relevance_calibration(list(logits), list(labels), ["nq-dev-select", "tqa-dev-select"])
    assert fit["a"] == pytest.approx(2.0, abs=0.25) and fit["b"] == pytest.approx(-1.0, abs=0.2)
    assert fit["pairs"] == 4000 and fit["positives"] == int(labels.sum())
