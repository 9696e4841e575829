"""The statistics behind reported numbers: the t-interval over seeds, the paired permutation test
between two models on the same test samples, and Holm's correction, each against a case worked
out by hand or against scipy itself."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ray_msa.statistics import holm, paired_fold_test, paired_permutation_test, t_interval


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p)))


def test_t_interval_by_hand():
    # mean 2.5, s = sqrt(5/3), sem = s/2, t(0.975, 3) = 3.182446305284263
    mean, std, low, high = t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (mean, std) == pytest.approx((2.5, math.sqrt(5 / 3)), abs=1e-12)
    assert (low, high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-9)
    assert t_interval([0.8, 0.8, 0.8])[1:] == (0.0, 0.8, 0.8)  # identical seeds: a zero-width interval
    assert all(math.isnan(v) for v in t_interval([0.8])[1:])  # one seed: no interval, not a fake one


def test_permutation_test_is_exact_on_a_case_counted_by_hand():
    # 4 samples: every swap pattern (2^4 = 16) is enumerated. Model a errs by 1 everywhere, b by 0;
    # a swap moves a sample's error to the other side, so the statistic is (kept - swapped) / 4 and
    # |statistic| >= 1 only when none or all are swapped: p = 2/16.
    y = np.zeros(4)
    difference, p = paired_permutation_test(y, np.ones(4), np.zeros(4), mae)
    assert difference == 1.0 and p == pytest.approx(2 / 16, abs=1e-12)


def test_permutation_test_equals_the_enumeration_and_scipys_sign_flip():
    rng = np.random.default_rng(3)
    y = rng.normal(size=10)
    a, b = y + rng.normal(size=10), y + 0.6 * rng.normal(size=10)
    observed, p = paired_permutation_test(y, a, b, mae)  # 2^10 < 9999: scipy enumerates exactly
    flips = [
        np.mean(np.where(s, np.abs(y - b), np.abs(y - a)) - np.where(s, np.abs(y - a), np.abs(y - b)))
        for s in itertools.product([False, True], repeat=10)
    ]
    assert observed == pytest.approx(mae(y, a) - mae(y, b), abs=1e-12)
    assert p == pytest.approx(np.mean(np.abs(flips) >= abs(observed) - 1e-12), abs=1e-12)
    # MAE is a mean of per-sample errors, so the same test is scipy's sign-flip test of the differences
    d = np.abs(y - a) - np.abs(y - b)
    reference = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=10**6)
    assert p == pytest.approx(reference.pvalue, abs=1e-12)


def test_identical_models_differ_by_nothing_and_a_shifted_model_is_significant():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    a = y + 0.5 * rng.normal(size=300)
    assert paired_permutation_test(y, a, a.copy(), mae) == (0.0, 1.0)
    difference, p = paired_permutation_test(y, a, a + 0.4, mae)
    assert difference < 0 and p < 0.001
    _, p_noise = paired_permutation_test(y, a, a + 1e-3 * rng.normal(size=300), mae)
    assert p_noise > 0.05


def test_holm_on_a_known_case():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-12)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.01, math.nan, 0.02])  # nan is not a test: two tests, not three
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_paired_fold_test_is_scipys_ttest_rel():
    a, b = [0.80, 0.75, 0.90, 0.70, 0.85], [0.78, 0.76, 0.85, 0.66, 0.80]
    difference, p = paired_fold_test(a, b)
    assert difference == pytest.approx(np.mean(np.subtract(a, b)), abs=1e-12)
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue, abs=1e-12)
