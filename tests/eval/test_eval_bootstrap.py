"""Bootstrap and paired-bootstrap intervals."""
from __future__ import annotations

import numpy as np
import pytest

from rearqa.eval import bootstrap
from rearqa.eval.bootstrap import bootstrap_ci, paired_bootstrap


def test_identical_lists_give_zero_difference():
    a = [0.0, 1.0, 1.0, 0.0, 0.5]
    result = paired_bootstrap(a, list(a), n_resamples=500)
    assert result["diff"] == 0.0
    assert (result["low"], result["high"]) == (0.0, 0.0)
    assert result["p_value"] == 1.0
    assert result["mean_a"] == result["mean_b"] == pytest.approx(0.5)


def test_clearly_better_list_has_interval_above_zero():
    rng = np.random.default_rng(1)
    a = (rng.random(300) < 0.3).astype(float)
    b = np.maximum(a, (rng.random(300) < 0.5).astype(float))  # b never worse, often better
    result = paired_bootstrap(a.tolist(), b.tolist(), n_resamples=2000)
    assert result["diff"] > 0.2
    assert 0.0 < result["low"] < result["diff"] < result["high"]
    assert result["p_value"] == 0.0
    worse = paired_bootstrap(b.tolist(), a.tolist(), n_resamples=2000)
    assert worse["high"] < 0.0 and worse["p_value"] == 1.0


def test_deterministic_with_seed_and_independent_of_chunking(monkeypatch):
    rng = np.random.default_rng(2)
    a, b = rng.random(50).tolist(), rng.random(50).tolist()
    first = paired_bootstrap(a, b, n_resamples=300, seed=7)
    assert paired_bootstrap(a, b, n_resamples=300, seed=7) == first
    assert paired_bootstrap(a, b, n_resamples=300, seed=8) != first
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", 120)  # 2 resamples per chunk
    assert paired_bootstrap(a, b, n_resamples=300, seed=7) == first


def test_bootstrap_ci_of_a_mean():
    assert bootstrap_ci([0.25] * 10, n_resamples=100) == {
        "n": 10, "mean": 0.25, "low": 0.25, "high": 0.25, "ci": 0.95}
    values = np.random.default_rng(3).random(200)
    result = bootstrap_ci(values.tolist(), n_resamples=1000)
    assert result["low"] < result["mean"] < result["high"]
    assert result["high"] - result["low"] < 0.2


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="ci=1.5"):
        bootstrap_ci([1.0], ci=1.5)
    with pytest.raises(ValueError, match="n_resamples=0"):
        paired_bootstrap([1.0], [1.0], n_resamples=0)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([float("nan")])


def test_seed_question_bootstrap_widens_for_seed_spread_only():
    from rearqa.eval.bootstrap import seed_question_bootstrap

    rng = np.random.default_rng(3)
    base = (rng.random(600) < 0.4).astype(float)
    # identical runs on both sides: nothing to resample
    same = seed_question_bootstrap([base] * 3, [base] * 3, n_resamples=500)
    assert same["diff"] == 0.0 and (same["low"], same["high"]) == (0.0, 0.0)
    assert (same["n"], same["runs_a"], same["runs_b"]) == (600, 3, 3)
    # b's three seeds: one as a, one 60 examples better, one 60 worse; their mean equals a
    up, down = base.copy(), base.copy()
    up[np.flatnonzero(base == 0)[:60]] = 1.0
    down[np.flatnonzero(base == 1)[:60]] = 0.0
    spread = seed_question_bootstrap([base] * 3, [base, up, down], n_resamples=4000, seed=1)
    assert spread["diff"] == pytest.approx(0.0)
    paired = paired_bootstrap(base.tolist(), ((base + up + down) / 3).tolist(), n_resamples=4000, seed=1)
    assert paired["high"] - paired["low"] < 0.03  # per-question means hide the seeds' spread
    assert spread["low"] < -0.05 and spread["high"] > 0.05  # the seeds' +-0.1 shows
    # one run a side: seeds add nothing, and the width is the question bootstrap's
    one = seed_question_bootstrap([base], [up], n_resamples=4000, seed=2)
    single = paired_bootstrap(base.tolist(), up.tolist(), n_resamples=4000, seed=2)
    assert one["diff"] == pytest.approx(single["diff"]) == pytest.approx(0.1)
    assert (one["high"] - one["low"]) == pytest.approx(single["high"] - single["low"], rel=0.15)


def test_seed_question_bootstrap_refuses_unpaired_or_empty_runs():
    from rearqa.eval.bootstrap import seed_question_bootstrap

    with pytest.raises(ValueError, match="same examples"):
        seed_question_bootstrap([[0.0, 1.0]], [[0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="one non-empty list"):
        seed_question_bootstrap([], [[1.0]])
    with pytest.raises(ValueError, match="NaN"):
        seed_question_bootstrap([[float("nan")]], [[1.0]])
