"""Metrics against hand-computed cases (MMSA's definitions)."""

import math

import numpy as np
import pytest

from ray_msa.metrics import regression_metrics


def test_hand_computed_case():
    truth = np.array([-3.0, -1.4, 0.0, 0.6, 2.5, 1.5])
    pred = np.array([-2.2, 0.4, -0.3, 0.4, 3.9, 2.5])
    m = regression_metrics(pred, truth)
    assert m["MAE"] == pytest.approx(np.mean([0.8, 1.8, 0.3, 0.2, 1.4, 1.0]))
    assert m["Corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])
    # Acc7: clip to [-3,3], round half to even: pred -> [-2, 0, -0, 0, 3, 2]; truth -> [-3, -1, 0, 1, 2, 2]
    assert m["Acc7"] == pytest.approx(2 / 6)  # indices 2 (0 == 0) and 5 (2 == 2)
    # Acc5: clip to [-2,2]: pred -> [-2, 0, -0, 0, 2, 2]; truth -> [-2, -1, 0, 1, 2, 2]
    assert m["Acc5"] == pytest.approx(4 / 6)
    # Has0: >= 0; truth [F,F,T,T,T,T], pred [F,T,F,T,T,T] -> 4/6
    assert m["Has0_Acc2"] == pytest.approx(4 / 6)
    # Non0: drop the zero label; truth>0 [F,F,T,T,T], pred>0 [F,T,T,T,T] -> 4/5
    assert m["Non0_Acc2"] == pytest.approx(4 / 5)


def test_round_half_to_even_and_clipping():
    truth = np.array([0.5, 1.5, 2.5, -0.5, 3.4])
    pred = np.array([0.0, 2.0, 2.0, 0.0, 9.0])
    m = regression_metrics(pred, truth)
    # np.round: 0.5->0, 1.5->2, 2.5->2, -0.5->-0; 3.4 clipped to 3, 9 clipped to 3
    assert m["Acc7"] == 1.0
    # Acc5 clips to [-2,2]: 2.5 -> 2, 3.4 -> 2, 9 -> 2
    assert m["Acc5"] == 1.0


def test_weighted_f1_matches_definition():
    truth = np.array([1.0, 2.0, -1.0, -2.0, 0.0, 1.0, -1.0, 2.0])
    pred = np.array([1.0, -1.0, -1.0, 1.0, 0.5, 0.2, -0.2, 1.0])
    m = regression_metrics(pred, truth)
    # Has0: truth>=0 = [T,T,F,F,T,T,F,T] (5 pos, 3 neg); pred>=0 = [T,F,F,T,T,T,F,T]
    # pos class: tp=4, fp=1, fn=1 -> f1=0.8; neg class: tp=2, fp=1, fn=1 -> f1=2/3
    assert m["Has0_F1"] == pytest.approx((5 * 0.8 + 3 * (2 / 3)) / 8)
    assert m["Has0_Acc2"] == pytest.approx(6 / 8)


def test_all_zero_labels_have_no_non0_metrics():
    m = regression_metrics(np.array([0.1, -0.1]), np.array([0.0, 0.0]))
    assert math.isnan(m["Non0_Acc2"]) and m["Has0_Acc2"] == 0.5


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        regression_metrics(np.zeros(3), np.zeros(4))
