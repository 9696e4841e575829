"""Metrics against hand-computed cases (MMSA's definitions)."""

import math

import numpy as np
import pytest

from ray_msa.metrics import class_metrics, emotion_metrics, regression_metrics, sims_metrics


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


def test_non0_f1_by_hand():
    truth = np.array([-3.0, -1.4, 0.0, 0.6, 2.5, 1.5])
    pred = np.array([-2.2, 0.4, -0.3, 0.4, 3.9, 2.5])
    # the zero label dropped: truth>0 [F,F,T,T,T], pred>0 [F,T,T,T,T]
    # positive (3): tp 3, fp 1, fn 0 -> P 3/4, R 1, F1 6/7; negative (2): tp 1, fp 0, fn 1 -> P 1, R 1/2, F1 2/3
    assert regression_metrics(pred, truth)["Non0_F1"] == pytest.approx((3 * 6 / 7 + 2 * 2 / 3) / 5, abs=1e-12)


def test_a_constant_prediction_reports_corr_zero_not_nan():
    """Pearson's r of a constant is undefined (0/0); it is reported as 0.0, no linear association, so a
    collapsed model shows as uncorrelated and the mean over folds stays a number."""
    truth = np.array([-2.0, -1.0, 0.5, 1.0, 2.0])
    m = regression_metrics(np.full(5, 0.3), truth)
    assert m["Corr"] == 0.0 and m["MAE"] == pytest.approx(np.mean(np.abs(truth - 0.3)), abs=1e-12)
    assert m["Has0_Acc2"] == pytest.approx(3 / 5) and m["Non0_Acc2"] == pytest.approx(3 / 5)
    assert sims_metrics(np.zeros(5), truth / 2)["Corr"] == 0.0


def test_sims_metrics_by_hand():
    truth = np.array([-1.0, -0.5, 0.0, 0.05, 0.5, 0.9])
    pred = np.array([-1.4, -0.05, 0.2, 0.3, 0.8, 0.6])  # -1.4 is clipped to -1 first
    m = sims_metrics(pred, truth)
    assert m["MAE"] == pytest.approx((0 + 0.45 + 0.2 + 0.25 + 0.3 + 0.3) / 6, abs=1e-12)
    x = np.array([-1.0, -0.05, 0.2, 0.3, 0.8, 0.6])
    r = np.mean((x - x.mean()) * (truth - truth.mean())) / (x.std() * truth.std())
    assert m["Corr"] == pytest.approx(r, abs=1e-12)
    # two classes, zero negative: truth [0,0,0,1,1,1], pred [0,0,1,1,1,1]
    assert m["Mult_acc_2"] == pytest.approx(5 / 6)
    # [-1,-0.1] (-0.1,0.1] (0.1,1]: truth [0,0,1,1,2,2], pred [0,1,2,2,2,2]
    assert m["Mult_acc_3"] == pytest.approx(3 / 6)
    # edges -0.7, -0.1, 0.1, 0.7: truth [0,1,2,2,3,4], pred [0,2,3,3,4,3]
    assert m["Mult_acc_5"] == pytest.approx(1 / 6)
    # F1 of truth>0 vs pred>0, weighted: positive (3) F1 6/7, negative (3) P 1, R 2/3, F1 0.8
    assert m["F1_score"] == pytest.approx((3 * 6 / 7 + 3 * 0.8) / 6, abs=1e-12)


def test_iemocap_metrics_by_hand():
    truth = np.array([[1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]])  # (N, emotion): neutral happy sad angry
    argmax = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 1, 0], [0, 1, 1, 1]])
    logits = np.zeros((4, 4, 2))
    np.put_along_axis(logits, argmax[..., None], 1.0, axis=-1)
    m = emotion_metrics(logits, truth)
    expected = {
        # neutral: truth [1,0,0,1], pred [1,1,0,0]: each class tp 1, fp 1, fn 1 -> F1 1/2
        "neutral": (2 / 4, 0.5),
        "happy": (1.0, 1.0),
        # sad: truth [1,1,0,0], pred [1,1,1,1]: positive P 1/2, R 1 -> 2/3; negative never predicted -> 0
        "sad": (2 / 4, (2 * 2 / 3 + 2 * 0.0) / 4),
        # angry: truth all 0, pred [0,0,0,1]: negative P 1, R 3/4 -> 6/7; the positive class has no support
        "angry": (3 / 4, 6 / 7),
    }
    for emotion, (acc, f1) in expected.items():
        assert m[f"{emotion}_Acc"] == pytest.approx(acc, abs=1e-12)
        assert m[f"{emotion}_F1"] == pytest.approx(f1, abs=1e-12)
    assert m["Mean_Acc"] == pytest.approx(np.mean([a for a, _ in expected.values()]), abs=1e-12)
    assert m["Mean_F1"] == pytest.approx(np.mean([f for _, f in expected.values()]), abs=1e-12)


def test_mvsa_class_metrics_by_hand():
    truth = np.array([0, 0, 1, 2, 2, 2])  # positive, neutral, negative
    pred = np.array([0, 1, 1, 2, 2, 0])
    m = class_metrics(np.eye(3)[pred], truth)
    # per class F1: 0: tp 1, fp 1, fn 1 -> 1/2; 1: tp 1, fp 1, fn 0 -> 2/3; 2: tp 2, fp 0, fn 1 -> 4/5
    assert m["Acc"] == pytest.approx(4 / 6)
    assert m["F1_weighted"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6, abs=1e-12)
    assert m["F1_macro"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3, abs=1e-12)
