"""One number per robustness curve (MultiBench's definitions).

Relative robustness: the area under the metric-vs-level curve by the trapezoid rule (levels 0.0 ... 0.9,
step 0.1, so a model that keeps a metric m at every level scores 0.9 m). Effective robustness: the area
between the curve and the late-fusion baseline's curve shifted to start at the same clean value; above 0
means the model loses less than late fusion does. For a metric where lower is better (MAE) the gap is
taken the other way, so above 0 is better there too.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid

LOWER_IS_BETTER = ("MAE",)


def relative_robustness(levels: np.ndarray, values: np.ndarray) -> float:
    """Area under (level, value) by the trapezoid rule."""
    return float(trapezoid(np.asarray(values, np.float64), np.asarray(levels, np.float64)))


def effective_robustness(levels: np.ndarray, values: np.ndarray, baseline: np.ndarray, metric: str) -> float:
    """Area between the curve and `baseline` shifted to the curve's clean value (the value at level 0)."""
    values, baseline = np.asarray(values, np.float64), np.asarray(baseline, np.float64)
    shifted = baseline - baseline[0] + values[0]
    gap = values - shifted
    return relative_robustness(levels, -gap if metric in LOWER_IS_BETTER else gap)
