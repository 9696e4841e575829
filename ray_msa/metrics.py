"""Metrics exactly as the field computes them, one set per kind of dataset.

MOSI/MOSEI (MMSA's `__eval_mosei_regression`, scale [-3, 3]):
- MAE and Corr (Pearson) on the unclipped values;
- Acc7 / Acc5: clip to [-3, 3] / [-2, 2], `np.round` (half to even), exact match;
- Has0_Acc2 / Has0_F1: `y >= 0` vs `pred >= 0` over all samples, weighted F1;
- Non0_Acc2 / Non0_F1: drop samples whose label is exactly 0, then `> 0` vs `> 0`.

CH-SIMS (MMSA's `__eval_sims_regression`): predictions and labels clipped to [-1, 1]
first; MAE and Corr after clipping; Mult_acc_2 with zero counted negative
([-1, 0], (0, 1]); Mult_acc_3 bins [-1, -0.1], (-0.1, 0.1], (0.1, 1]; Mult_acc_5 bins at
±0.7 and ±0.1; F1_score is the weighted F1 of the two classes.

Corr of a constant prediction (or constant labels) is undefined (0/0); it is reported as 0.0, no linear
association, where MMSA's `np.corrcoef` gives nan: a collapsed model then reads as uncorrelated and a mean
over folds stays a number.

IEMOCAP (MulT's `eval_iemocap`): per emotion, argmax of its two logits against the
binary label: accuracy and weighted F1; plus their means over the four emotions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import f1_score

METRICS = ("MAE", "Corr", "Acc7", "Acc5", "Has0_Acc2", "Has0_F1", "Non0_Acc2", "Non0_F1")
SIMS_METRICS = ("MAE", "Corr", "Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score")
EMOTIONS = ("neutral", "happy", "sad", "angry")  # MulT's order of the (N, 4, 2) labels
EMOTION_METRICS = ("Mean_Acc", "Mean_F1", *(f"{e}_{m}" for e in EMOTIONS for m in ("Acc", "F1")))
CLASS_METRICS = ("Acc", "F1_weighted", "F1_macro")
METRIC_SETS = {"mmsa": METRICS, "sims": SIMS_METRICS, "emotions": EMOTION_METRICS, "classes": CLASS_METRICS}
DEFAULT_METRIC = {"mmsa": "MAE", "sims": "MAE", "emotions": "Mean_F1", "classes": "Acc"}
ALL_METRICS = tuple(dict.fromkeys(METRICS + SIMS_METRICS + EMOTION_METRICS + CLASS_METRICS))
LOWER_IS_BETTER = {"MAE"}


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if pred.shape != truth.shape or pred.size == 0:
        raise ValueError(f"need equal, non-empty predictions and labels, got {pred.shape} and {truth.shape}")
    non_zero = truth != 0
    has0_pred, has0_truth = pred >= 0, truth >= 0
    non0_pred, non0_truth = pred[non_zero] > 0, truth[non_zero] > 0
    corr = np.corrcoef(pred, truth)[0, 1] if pred.std() > 0 and truth.std() > 0 else 0.0
    return {
        "MAE": float(np.mean(np.abs(pred - truth))),
        "Corr": float(corr),
        "Acc7": _multiclass_acc(np.round(np.clip(pred, -3, 3)), np.round(np.clip(truth, -3, 3))),
        "Acc5": _multiclass_acc(np.round(np.clip(pred, -2, 2)), np.round(np.clip(truth, -2, 2))),
        "Has0_Acc2": float(np.mean(has0_pred == has0_truth)),
        "Has0_F1": float(f1_score(has0_truth, has0_pred, average="weighted")),
        "Non0_Acc2": float(np.mean(non0_pred == non0_truth)) if non_zero.any() else float("nan"),
        "Non0_F1": float(f1_score(non0_truth, non0_pred, average="weighted")) if non_zero.any() else float("nan"),
    }


def sims_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    pred = np.clip(np.asarray(pred, dtype=np.float64).reshape(-1), -1.0, 1.0)
    truth = np.clip(np.asarray(truth, dtype=np.float64).reshape(-1), -1.0, 1.0)
    if pred.shape != truth.shape or pred.size == 0:
        raise ValueError(f"need equal, non-empty predictions and labels, got {pred.shape} and {truth.shape}")
    out = {
        "MAE": float(np.mean(np.abs(pred - truth))),
        "Corr": float(np.corrcoef(pred, truth)[0, 1]) if pred.std() > 0 and truth.std() > 0 else 0.0,
    }
    for name, edges in (("Mult_acc_2", [0.0]), ("Mult_acc_3", [-0.1, 0.1]), ("Mult_acc_5", [-0.7, -0.1, 0.1, 0.7])):
        # right=True: bin i holds (edge[i-1], edge[i]], as MMSA's `> ms[i] and <= ms[i+1]`
        out[name] = _multiclass_acc(np.digitize(pred, edges, right=True), np.digitize(truth, edges, right=True))
    out["F1_score"] = float(f1_score(truth > 0, pred > 0, average="weighted"))
    return {k: out[k] for k in SIMS_METRICS}


def emotion_metrics(logits: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    logits = np.asarray(logits, dtype=np.float64).reshape(len(logits), len(EMOTIONS), 2)
    truth = np.asarray(truth).reshape(len(truth), len(EMOTIONS))
    out: dict[str, float] = {}
    for i, emotion in enumerate(EMOTIONS):
        pred = logits[:, i].argmax(-1)
        out[f"{emotion}_Acc"] = float(np.mean(pred == truth[:, i]))
        out[f"{emotion}_F1"] = float(f1_score(truth[:, i], pred, average="weighted"))
    out["Mean_Acc"] = float(np.mean([out[f"{e}_Acc"] for e in EMOTIONS]))
    out["Mean_F1"] = float(np.mean([out[f"{e}_F1"] for e in EMOTIONS]))
    return {k: out[k] for k in EMOTION_METRICS}


def class_metrics(logits: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy and weighted / macro F1 of the argmax class (MVSA's positive / neutral / negative)."""
    pred = np.asarray(logits).argmax(-1)
    truth = np.asarray(truth).reshape(-1)
    return {
        "Acc": float(np.mean(pred == truth)),
        "F1_weighted": float(f1_score(truth, pred, average="weighted")),
        "F1_macro": float(f1_score(truth, pred, average="macro")),
    }


def compute_metrics(metric_set: str, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The metrics of `metric_set` ("mmsa", "sims", "emotions" or "classes")."""
    return {"mmsa": regression_metrics, "sims": sims_metrics, "emotions": emotion_metrics, "classes": class_metrics}[
        metric_set
    ](pred, truth)


def metric_function(metric_set: str, name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """`(truth, pred) -> value` of one metric, equal to `compute_metrics(metric_set, pred, truth)[name]`;
    MAE and Acc take a direct path (a permutation test computes a metric thousands of times)."""
    if name == "MAE" and metric_set in ("mmsa", "sims"):
        bound = 1.0 if metric_set == "sims" else np.inf  # SIMS clips to [-1, 1] first

        def mae(truth: np.ndarray, pred: np.ndarray) -> float:
            pred, truth = np.asarray(pred, np.float64).reshape(-1), np.asarray(truth, np.float64).reshape(-1)
            return float(np.mean(np.abs(np.clip(pred, -bound, bound) - np.clip(truth, -bound, bound))))

        return mae
    if name == "Acc" and metric_set == "classes":
        return lambda truth, pred: float(np.mean(np.asarray(pred).argmax(-1) == np.asarray(truth).reshape(-1)))
    return lambda truth, pred: compute_metrics(metric_set, pred, truth)[name]


def _multiclass_acc(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sum(pred == truth) / len(truth))


def is_better(metric: str, new: float, old: float | None) -> bool:
    """True when `new` improves on `old` for this metric's direction."""
    if old is None or np.isnan(old):
        return not np.isnan(new)
    return new < old if metric in LOWER_IS_BETTER else new > old


def mode_of(metric: str) -> str:
    return "min" if metric in LOWER_IS_BETTER else "max"
