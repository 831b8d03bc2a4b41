"""Bootstrap confidence intervals for mean metrics and for paired differences between methods.

Two methods compared on the same questions are compared per question (a paired bootstrap,
Koehn 2004 "Statistical significance tests for machine translation evaluation"): resample the
questions with replacement, recompute the mean of the per-question differences, and read the
confidence interval off the percentiles of those resampled means. Pairing removes the
between-question variance that dominates QA metrics, so the interval is far tighter than
comparing two separate intervals.

Resampling is vectorised in numpy, in chunks of resamples so that memory stays bounded
(10,000 resamples of 11,313 TriviaQA questions would otherwise be a 113M-entry index matrix).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_CHUNK_ELEMENTS = 4_000_000  # resample indices drawn at once (32 MB of int64)


def _check(n_resamples: int, ci: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r}: must be a positive integer, e.g. 10000")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci={ci!r}: must be a confidence level strictly between 0 and 1, e.g. 0.95")


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty flat list of per-example values")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of `n_resamples` bootstrap resamples of `values`, shape (n_resamples,)."""
    rng = np.random.default_rng(seed)
    n = values.size
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, rows_per_chunk):
        stop = min(start + rows_per_chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))  # (chunk, n)
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _interval(means: np.ndarray, ci: float) -> tuple[float, float]:
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(values: Sequence[float], n_resamples: int = 10000, seed: int = 0,
                 ci: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap interval for the mean: {n, mean, low, high, ci}."""
    _check(n_resamples, ci)
    array = _as_array(values, "values")
    low, high = _interval(_resampled_means(array, n_resamples, seed), ci)
    return {"n": int(array.size), "mean": float(array.mean()), "low": low, "high": high, "ci": ci}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000,
                     seed: int = 0, ci: float = 0.95) -> dict[str, float]:
    """Paired bootstrap of mean(b) - mean(a) over the same examples; `a` is the baseline.

    Returns {n, mean_a, mean_b, diff, low, high, ci, p_value}: diff = mean_b - mean_a, [low, high]
    its percentile interval, and p_value the share of resamples with diff <= 0 (a one-sided
    bootstrap p-value for "b is better than a"; 1.0 when the two lists are identical).
    """
    _check(n_resamples, ci)
    array_a, array_b = _as_array(a, "a"), _as_array(b, "b")
    if array_a.size != array_b.size:
        raise ValueError(f"paired bootstrap needs the same examples on both sides: "
                         f"got {array_a.size} and {array_b.size} values")
    means = _resampled_means(array_b - array_a, n_resamples, seed)
    low, high = _interval(means, ci)
    return {"n": int(array_a.size), "mean_a": float(array_a.mean()),
            "mean_b": float(array_b.mean()), "diff": float(array_b.mean() - array_a.mean()),
            "low": low, "high": high, "ci": ci, "p_value": float(np.mean(means <= 0.0))}


def _as_runs(values: Sequence[Sequence[float]], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: expected one non-empty list of per-example values per run (seed)")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def seed_question_bootstrap(a_runs: Sequence[Sequence[float]], b_runs: Sequence[Sequence[float]],
                            n_resamples: int = 10000, seed: int = 0,
                            ci: float = 0.95) -> dict[str, float]:
    """Two-level paired bootstrap of mean(b) - mean(a) where each side is several training runs
    (seeds) scored on the same examples: `a_runs[s][i]` is run s's score on example i.

    Each resample draws each side's runs with replacement (seed variance) and then the examples
    with replacement (example variance), pairing the examples across the sides: the difference is
    the mean over the drawn examples of (b's mean over its drawn runs - a's over its own). A side
    with one run adds no seed variance, so the interval then speaks for that side's one run only;
    with few runs the resampling understates the seeds' spread (by about (k - 1) / k in variance).

    Returns {n, runs_a, runs_b, diff, low, high, ci}: diff is the plain difference of the means.
    """
    _check(n_resamples, ci)
    a, b = _as_runs(a_runs, "a_runs"), _as_runs(b_runs, "b_runs")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a seed-and-example bootstrap needs the same examples on both sides: "
                         f"got {a.shape[1]} and {b.shape[1]} values")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(start + rows_per_chunk, n_resamples) - start
        pick_a = rng.integers(0, a.shape[0], size=(rows, a.shape[0]))
        pick_b = rng.integers(0, b.shape[0], size=(rows, b.shape[0]))
        weight_a = np.stack([np.bincount(p, minlength=a.shape[0]) for p in pick_a]) / a.shape[0]
        weight_b = np.stack([np.bincount(p, minlength=b.shape[0]) for p in pick_b]) / b.shape[0]
        diffs = weight_b @ b - weight_a @ a  # (rows, n): each resample's per-example difference
        idx = rng.integers(0, n, size=(rows, n))
        means[start:start + rows] = np.take_along_axis(diffs, idx, axis=1).mean(axis=1)
    low, high = _interval(means, ci)
    return {"n": int(n), "runs_a": int(a.shape[0]), "runs_b": int(b.shape[0]),
            "diff": float(b.mean() - a.mean()), "low": low, "high": high, "ci": ci}
