"""Correlation metrics for IQA: torchmetrics SRCC / PLCC / KRCC, and logistic-fitted PLCC.

SRCC (Spearman), PLCC (Pearson) and KRCC (Kendall) are computed over a whole split once per
epoch: torchmetrics keeps every prediction of the epoch (and gathers them across DDP ranks).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.regression import KendallRankCorrCoef, PearsonCorrCoef, SpearmanCorrCoef


def correlation_metrics(prefix: str) -> MetricCollection:
    """SRCC, PLCC and KRCC as one collection with keys like ``val/srcc``.

    Args:
        prefix: Prepended to each key (``"val/"``, ``"test/"``).
    """
    metrics = MetricCollection(
        {"srcc": SpearmanCorrCoef(), "plcc": PearsonCorrCoef(), "krcc": KendallRankCorrCoef()},
        prefix=prefix,
        compute_groups=False,
    )
    # fp64 states: the figures do not depend on how a split is sharded across DDP ranks.
    return metrics.set_dtype(torch.float64)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """Four-parameter logistic: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    return (b1 - b2) / (1 + np.exp(-(x - b3) / (np.abs(b4) + 1e-12))) + b2


def logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """Five-parameter logistic of the VQEG report: ``b1 (1/2 - 1/(1 + exp(b2 (x - b3)))) + b4 x + b5``."""
    return b1 * (0.5 - 1 / (1 + np.exp(b2 * (x - b3)))) + b4 * x + b5


def plcc_logistic(pred: np.ndarray, mos: np.ndarray, params: int = 4) -> float:
    """PLCC after a logistic mapping from predictions to MOS fitted with ``scipy.optimize``.

    IQA papers report it beside the plain PLCC: it removes a monotonic non-linearity between the
    model's scale and the MOS scale. Falls back to the plain PLCC when the fit fails.

    The sign survives the fit. A logistic can fall as well as rise, so a fit on the raw
    predictions turns an anti-correlation into a positive figure. Here the logistic is fitted
    to ``sign(PLCC) * pred`` (so the map is increasing in the sign-corrected predictions), and
    the result is ``sign(PLCC) * PLCC(fitted, mos)``: negative where the predictions fall as the
    MOS rises, like the plain PLCC, and ``plcc_logistic(-pred) == -plcc_logistic(pred)``. When
    the fit still comes out decreasing, the plain PLCC is returned.

    Args:
        pred: Predicted scores.
        mos: Subjective scores (or normalised targets).
        params: 4 or 5 (:func:`logistic4` or :func:`logistic5`).
    """
    from scipy.optimize import curve_fit
    from scipy.stats import pearsonr, spearmanr

    pred, mos = np.asarray(pred, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    if params not in (4, 5):
        raise ValueError(f"params={params}: the logistic mapping has 4 or 5 parameters")
    if len(pred) < params + 1 or np.ptp(pred) == 0 or np.ptp(mos) == 0:
        return float("nan")
    sign = -1.0 if float(pearsonr(pred, mos)[0]) < 0 else 1.0
    x = sign * pred
    spread = float(np.std(x)) or 1.0
    if params == 4:
        fn, p0 = logistic4, [mos.max(), mos.min(), float(np.mean(x)), spread]
    else:
        fn, p0 = (
            logistic5,
            [float(np.ptp(mos)), 1.0 / spread, float(np.mean(x)), 0.0, float(np.mean(mos))],
        )
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fitted_params, _ = curve_fit(fn, x, mos, p0=p0, maxfev=20000)
            fitted = fn(x, *fitted_params)
        except (RuntimeError, ValueError):
            fitted = x
        if not np.all(np.isfinite(fitted)) or np.ptp(fitted) == 0:
            fitted = x
        elif float(spearmanr(x, fitted)[0]) < 0:  # the fit turned the map around
            fitted = x
    return sign * float(pearsonr(fitted, mos)[0])
