"""Bootstrap confidence intervals of SRCC / PLCC and a paired bootstrap test between two methods.

Images are resampled with replacement: one seeded index matrix ``[n, N]``
(``numpy.random.default_rng(seed).integers(0, N, (n, N))``) is drawn once, and every resample's
SRCC (Pearson correlation of the row-wise average ranks, as ``scipy.stats.spearmanr``) and PLCC
is computed at once. The same seed gives the same figures; two methods compared on the same
images with the same seed see the same resamples.

- :func:`bootstrap_intervals`: the point estimates and percentile intervals.
- :func:`paired_bootstrap_pvalue`: a two-sided p-value that two methods, scored on the same
  images in the same order, have equal SRCC (or PLCC).

A resample where a correlation is undefined (constant scores or targets in that resample, which
happens only with a handful of images) is left out of the interval and of the test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

METRICS = ("srcc", "plcc")
INTERVAL_KEYS = ("srcc_lo", "srcc_hi", "plcc_lo", "plcc_hi")
# Rows of resamples correlated at a time: bounds the memory of the ranked copies.
_CHUNK_VALUES = 4_000_000

__all__ = ["INTERVAL_KEYS", "METRICS", "bootstrap_intervals", "paired_bootstrap_pvalue"]


def _vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per image (1-D), got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s) (first at position {first})"
        )
    return array


def _checked(named: dict[str, Sequence[float] | np.ndarray], n: int) -> list[np.ndarray]:
    arrays = [_vector(values, name) for name, values in named.items()]
    lengths = {name: len(a) for name, a in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            "different lengths: " + ", ".join(f"{k} has {v}" for k, v in lengths.items())
        )
    if int(n) != n or n < 0:
        raise ValueError(f"n={n} resamples: must be a whole number >= 0")
    return arrays


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y``; NaN where a row is
    constant."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _correlations(scores: np.ndarray, targets: np.ndarray, index: np.ndarray, metric: str):
    """``metric`` (srcc or plcc) of every resample (rows of ``index``), chunked over rows."""
    out = np.empty(len(index), dtype=np.float64)
    step = max(1, _CHUNK_VALUES // max(1, index.shape[1]))
    for start in range(0, len(index), step):
        rows = index[start : start + step]
        x, y = scores[rows], targets[rows]
        if metric == "srcc":
            x, y = rankdata(x, axis=1), rankdata(y, axis=1)
        out[start : start + step] = _rowwise_pearson(x, y)
    return out


def _index(size: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, size, size=(n, size))


def bootstrap_intervals(
    scores: Sequence[float] | np.ndarray,
    targets: Sequence[float] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """SRCC and PLCC of ``scores`` against ``targets`` with percentile bootstrap intervals.

    Args:
        scores: One predicted score per image.
        targets: The images' MOS (or normalised targets), in the same order.
        n: Resamples; 0 gives the point estimates only (no ``*_lo`` / ``*_hi`` keys).
        seed: Seed of ``numpy.random.default_rng`` drawing the resampled indices.
        level: Coverage of the interval: its bounds are the ``(1 - level) / 2`` and
            ``(1 + level) / 2`` percentiles (numpy's linear interpolation) of the resampled
            figures.

    Returns:
        ``srcc`` and ``plcc`` on all images, and ``srcc_lo``, ``srcc_hi``, ``plcc_lo``,
        ``plcc_hi`` when ``n > 0``. A figure is NaN where it is undefined: fewer than 2 images,
        constant scores, or (for a bound) no resample where it is defined.

    Raises:
        ValueError: NaN or infinite inputs, different lengths, ``n < 0`` or ``level``
            outside (0, 1).
    """
    scores, targets = _checked({"scores": scores, "targets": targets}, n)
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must be between 0 and 1 (e.g. 0.95)")
    whole = np.arange(len(scores))[None, :]
    out = {}
    for metric in METRICS:
        point = _correlations(scores, targets, whole, metric)[0] if len(scores) > 1 else np.nan
        out[metric] = float(point)
    if n == 0:
        return out
    index = _index(len(scores), int(n), seed) if len(scores) > 1 else None
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    for metric in METRICS:
        lo = hi = float("nan")
        if index is not None:
            values = _correlations(scores, targets, index, metric)
            values = values[np.isfinite(values)]
            if len(values):
                lo, hi = (float(v) for v in np.percentile(values, tails))
        out[f"{metric}_lo"], out[f"{metric}_hi"] = lo, hi
    return out


def paired_bootstrap_pvalue(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    targets: Sequence[float] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
    metric: str = "srcc",
) -> float:
    """Two-sided p-value that methods a and b have equal ``metric`` on the same images.

    Both methods are correlated on the same resampled index sets. With ``d`` the observed
    difference (a minus b, all images) and ``d_i`` the difference on resample ``i``, ``count``
    is the number of resamples where the difference does not keep the observed sign
    (``d_i <= 0`` when ``d > 0``, ``d_i >= 0`` when ``d < 0``), and

        p = min(1, 2 * (count + 1) / (m + 1))

    with ``m`` the resamples where both figures are defined. The ``+ 1`` counts the observed
    sample itself, so p is never 0: its floor is ``2 / (m + 1)`` (0.002 with 1000 resamples).
    ``d = 0`` (two identical score vectors, say) gives p = 1.

    Args:
        scores_a: Method a's score of each image.
        scores_b: Method b's score of the same images, in the same order.
        targets: The images' MOS (or normalised targets).
        n: Resamples (at least 1).
        seed: Seed of ``numpy.random.default_rng`` drawing the resampled indices (the same
            draw as :func:`bootstrap_intervals` with this seed).
        metric: ``"srcc"`` or ``"plcc"``.

    Returns:
        The p-value; NaN where it is undefined (fewer than 2 images, a method's figure
        undefined on all images, or no resample where both are defined).

    Raises:
        ValueError: NaN or infinite inputs, different lengths, ``n < 1`` or an unknown metric.
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: must be one of {list(METRICS)}")
    named = {"scores_a": scores_a, "scores_b": scores_b, "targets": targets}
    scores_a, scores_b, targets = _checked(named, n)
    if n < 1:
        raise ValueError(f"n={n} resamples: a p-value needs at least 1")
    if len(targets) < 2:
        return float("nan")
    whole = np.arange(len(targets))[None, :]
    observed = (
        _correlations(scores_a, targets, whole, metric)[0]
        - _correlations(scores_b, targets, whole, metric)[0]
    )
    if not np.isfinite(observed):
        return float("nan")
    if observed == 0:
        return 1.0
    index = _index(len(targets), int(n), seed)
    diffs = _correlations(scores_a, targets, index, metric) - _correlations(
        scores_b, targets, index, metric
    )
    diffs = diffs[np.isfinite(diffs)]
    if not len(diffs):
        return float("nan")
    count = int((diffs * np.sign(observed) <= 0).sum())
    return float(min(1.0, 2 * (count + 1) / (len(diffs) + 1)))
