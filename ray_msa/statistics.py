"""Significance of differences the commands report (scipy's tests, not hand-written ones)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def paired_fold_test(variant: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """Mean difference variant - reference over folds paired by index (the same folds: same seed
    and data), and the two-sided paired t-test's p-value (nan when it is undefined: fewer than
    two folds, or every difference equal)."""
    a, b = np.asarray(variant, float), np.asarray(reference, float)
    if a.shape != b.shape:
        raise ValueError(f"paired test over folds needs the same folds, got {a.shape} and {b.shape}")
    difference = a - b
    if len(difference) < 2 or np.allclose(difference, difference[0], rtol=0, atol=1e-12):
        return float(difference.mean()) if len(difference) else math.nan, math.nan
    return float(difference.mean()), float(stats.ttest_rel(a, b).pvalue)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof 1) and the two-sided Student-t confidence interval of the mean of
    independent runs (e.g. one test score per seed); the interval is nan with fewer than two."""
    x = np.asarray(values, float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    if np.all(x == x[0]):  # identical runs: float rounding would give a std of 1e-16, not 0
        return float(x[0]), 0.0, float(x[0]), float(x[0])
    std = float(x.std(ddof=1))
    low, high = stats.t.interval(level, df=len(x) - 1, loc=mean, scale=std / math.sqrt(len(x)))
    return mean, std, float(low), float(high)


def paired_permutation_test(
    labels: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float]:
    """metric(a) - metric(b) on the same test samples, and the two-sided p-value of scipy's paired
    permutation test: under the null the two models' predictions of each sample are exchangeable,
    so every resample swaps them sample by sample (any metric, not only per-sample means)."""
    y, a, b = np.asarray(labels), np.asarray(pred_a), np.asarray(pred_b)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"paired test needs predictions of the same samples, got {len(y)}, {len(a)}, {len(b)}")

    def difference(first: np.ndarray, second: np.ndarray) -> float:
        return metric(y, first) - metric(y, second)

    observed = difference(a, b)
    if np.array_equal(a, b):
        return observed, 1.0
    result = stats.permutation_test(
        (a, b),
        difference,
        permutation_type="samples",
        vectorized=False,
        n_resamples=n_resamples,
        rng=np.random.default_rng(seed),
    )
    return float(observed), float(result.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order;
    a difference is significant at level a when its adjusted p-value is <= a. nan stays nan and
    does not count as a test."""
    p = np.asarray(pvalues, float)
    tested = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), math.nan)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
