"""Correlation metrics for IQA: torchmetrics SRCC / PLCC / KRCC, and logistic-fitted PLCC.

SRCC (Spearman), PLCC (Pearson) and KRCC (Kendall) are computed over a whole split once per
epoch: torchmetrics keeps every prediction of the epoch (and gathers them across DDP ranks).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torchmetrics import MetricCollection
from torchmetrics.regression import KendallRankCorrCoef, PearsonCorrCoef, SpearmanCorrCoef

#: The batch key naming each image's dataset (batches of ``dataset=mix``).
SOURCE_KEY = "dataset"
#: The figures :class:`CorrelationMetrics` averages over datasets.
CORRELATIONS = ("srcc", "plcc", "krcc")


def _collection(prefix: str) -> MetricCollection:
    metrics = MetricCollection(
        {"srcc": SpearmanCorrCoef(), "plcc": PearsonCorrCoef(), "krcc": KendallRankCorrCoef()},
        prefix=prefix,
        compute_groups=False,
    )
    # fp64 states: the figures do not depend on how a split is sharded across DDP ranks.
    return metrics.set_dtype(torch.float64)


class CorrelationMetrics(MetricCollection):
    """SRCC, PLCC and KRCC over a split (keys like ``val/srcc``), and per dataset where the
    batches name each image's dataset (a mix of datasets, ``batch["dataset"]``).

    With dataset names, :meth:`compute` gives each dataset's figures (``val/koniq/srcc``,
    ``val/koniq/plcc``, ``val/koniq/krcc``, ``val/koniq/srcc_plcc``), their mean over the
    datasets as the split's figures (``val/srcc`` ...: so ``val/srcc_plcc``, the early-stopping
    metric, is the mean of the datasets' (SRCC + PLCC) / 2), and the figures over all images
    pooled (``val/pooled/srcc`` ...). Without, the collection is the plain one.

    :meth:`set_sources` takes the names of the batch about to be scored (the module calls it
    for each batch); :meth:`update` then splits the batch's scores by them.
    """

    def __init__(self, prefix: str) -> None:
        base = _collection(prefix)
        super().__init__(dict(base.items(keep_base=True)), prefix=prefix, compute_groups=False)
        self.sources: list[str] | None = None
        self.by_source: dict[str, MetricCollection] = {}

    def set_sources(self, batch: Any) -> None:
        """Take the per-image dataset names of the batch about to be scored (None where the
        batch names none)."""
        names = batch.get(SOURCE_KEY) if isinstance(batch, dict) else None
        self.sources = None if names is None else ([names] if isinstance(names, str) else list(names))

    def _of(self, name: str, device: torch.device) -> MetricCollection:
        if name not in self.by_source:
            self.by_source[name] = _collection(f"{self.prefix}{name}/").to(device)
        return self.by_source[name]

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(preds, target)
        sources = self.sources
        if sources is None:
            return
        if len(sources) != len(preds):
            raise ValueError(
                f"{len(preds)} scores but {len(sources)} dataset names in the batch's "
                f"'{SOURCE_KEY}'"
            )
        for name in dict.fromkeys(sources):
            mask = torch.tensor([s == name for s in sources], device=preds.device)
            self._of(name, preds.device).update(preds[mask], target[mask])

    def _names(self) -> list[str]:
        """Every rank's dataset names (a rank may have scored no image of one dataset)."""
        names = sorted(self.by_source)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[list[str]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(parts, names)
            names = sorted({n for part in parts for n in part})
        return names

    def compute(self) -> dict[str, torch.Tensor]:
        values = super().compute()
        names = self._names()
        if not names:
            return values
        prefix = self.prefix or ""
        out = {f"{prefix}pooled/{k[len(prefix):]}": v for k, v in values.items()}
        device = next(iter(values.values())).device
        per = {}
        for name in names:
            figures = self._of(name, device).compute()
            key = f"{prefix}{name}/"
            figures[f"{key}srcc_plcc"] = (figures[f"{key}srcc"] + figures[f"{key}plcc"]) / 2
            per.update(figures)
        for metric in CORRELATIONS:
            out[f"{prefix}{metric}"] = torch.stack(
                [per[f"{prefix}{n}/{metric}"].double() for n in names]
            ).mean()
        out.update(per)
        return out

    def reset(self) -> None:
        super().reset()
        self.by_source = {}


def correlation_metrics(prefix: str) -> CorrelationMetrics:
    """SRCC, PLCC and KRCC as one collection with keys like ``val/srcc`` (per dataset too where
    batches name theirs: :class:`CorrelationMetrics`).

    Args:
        prefix: Prepended to each key (``"val/"``, ``"test/"``).
    """
    return CorrelationMetrics(prefix).set_dtype(torch.float64)


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
