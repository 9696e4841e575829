"""Regression-sentiment metrics exactly as MMSA computes them (MOSI/MOSEI scale [-3, 3]).

- MAE and Corr (Pearson) on the unclipped values;
- Acc7 / Acc5: clip to [-3, 3] / [-2, 2], `np.round` (half to even), exact match;
- Has0_Acc2 / Has0_F1: `y >= 0` vs `pred >= 0` over all samples, weighted F1;
- Non0_Acc2 / Non0_F1: drop samples whose label is exactly 0, then `> 0` vs `> 0`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

METRICS = ("MAE", "Corr", "Acc7", "Acc5", "Has0_Acc2", "Has0_F1", "Non0_Acc2", "Non0_F1")
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


def _multiclass_acc(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sum(pred == truth) / len(truth))


def is_better(metric: str, new: float, old: float | None) -> bool:
    """True when `new` improves on `old` for this metric's direction."""
    if old is None or np.isnan(old):
        return not np.isnan(new)
    return new < old if metric in LOWER_IS_BETTER else new > old


def mode_of(metric: str) -> str:
    return "min" if metric in LOWER_IS_BETTER else "max"
