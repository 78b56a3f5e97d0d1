"""Correlation metrics for IQA: torchmetrics SRCC / PLCC / KRCC.

SRCC (Spearman), PLCC (Pearson) and KRCC (Kendall) are computed over a whole split once per
epoch: torchmetrics keeps every prediction of the epoch (and gathers them across DDP ranks).
"""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.regression import KendallRankCorrCoef, PearsonCorrCoef, SpearmanCorrCoef


def correlation_metrics(prefix: str) -> MetricCollection:
    """SRCC, PLCC and KRCC as one collection with keys like ``val/srcc``.

    Args:
        prefix: Prepended to each key (``"val/"``, ``"test/"``).
    """
    return MetricCollection(
        {"srcc": SpearmanCorrCoef(), "plcc": PearsonCorrCoef(), "krcc": KendallRankCorrCoef()},
        prefix=prefix,
        compute_groups=False,
    )
