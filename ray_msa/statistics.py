"""Significance of differences the commands report (scipy's tests, not hand-written ones)."""

from __future__ import annotations

import math
from collections.abc import Sequence

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
