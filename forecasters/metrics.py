"""Forecast error measures of the evaluation protocol (datasets/nab/README.md)."""
from __future__ import annotations

import numpy as np


def mase_scale(y_train: np.ndarray, m: int = 288) -> float:
    """In-sample MAE of the seasonal-naive forecast with period m (m = 1 if fewer than 2m rows)."""
    y = np.asarray(y_train, float)
    if len(y) < 2 * m:
        m = 1
    if len(y) <= m:
        return float("nan")
    return float(np.mean(np.abs(y[m:] - y[:-m])))


def mase(truth: np.ndarray, pred: np.ndarray, scale: float) -> float:
    mae = float(np.mean(np.abs(np.asarray(truth, float) - np.asarray(pred, float))))
    if not scale or not np.isfinite(scale):
        return float("nan") if mae else 0.0
    return mae / scale


def smape(truth: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric MAPE in 0..2 (0/0 counts as 0)."""
    a = np.asarray(truth, float)
    f = np.asarray(pred, float)
    den = np.abs(a) + np.abs(f)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den == 0, 0.0, 2 * np.abs(a - f) / den)
    return float(np.mean(r))


def coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    a = np.asarray(truth, float)
    return float(np.mean((a >= lower) & (a <= upper)))
