"""Training targets over five quality levels: Q-Align's level word and DeQA-Score's soft label.

- Q-Align (arXiv 2312.17090, Sec. 3.1): the range between the lowest (m) and highest (M) score
  of a dataset is cut into five equal intervals; a score s is level i (1 = bad .. 5 = excellent)
  when ``m + (i-1)(M-m)/5 < s <= m + i(M-m)/5``, and the model is trained with cross-entropy on
  that level's word.
- DeQA-Score (arXiv 2501.11561, ``build_soft_labels/gen_soft_label.py``): the score and its
  rating std are rescaled to the 1-5 level scale with the same m, M; the Gaussian density at
  the five levels (``pdf``, or the mass of each unit interval, ``cdf``) is adjusted with an
  affine map ``alpha * p + beta`` so that it sums to one and its mean is the score, clamped at
  zero; where the std is below ``min_std`` or the clamped mean misses the score by more than
  ``max_shift`` the label is the two-level interpolation between the neighbouring levels. The
  model is trained with KL(label || predicted level distribution).

Level distributions are ordered as the score words, best first (excellent .. bad); a rating
histogram (KonIQ-10k's ``c1 .. c5``, worst first) is reversed to that order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: Q-Align's five level words, best first.
QALIGN_LEVELS = ("excellent", "good", "fair", "poor", "bad")
#: ``range``: the score range cut into levels.
RANGES = ("observed", "declared")
#: ``density``: how DeQA-Score discretises the Gaussian.
DENSITIES = ("pdf", "cdf")
#: ``softmax``: over the whole vocabulary (the references') or over the five words only.
SOFTMAXES = ("vocab", "words")
#: The references' tolerance at the bin edges (``eps`` of gen_soft_label.py).
EDGE_EPS = 1e-8
_LEVELS = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)


def to_level_scale(
    target: torch.Tensor, low: float, high: float, std: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores (and stds) in target units as the 1-5 level scale of ``[low, high]``.

    Args:
        target: ``[B]`` scores, higher is better.
        low: The score that maps to 1 (the dataset's lowest, for ``range=observed``).
        high: The score that maps to 5.
        std: ``[B]`` rating stds in the same units, or None.

    Returns:
        ``1 + 4 (target - low) / (high - low)`` and ``4 std / (high - low)`` (float64).
    """
    span = float(high) - float(low)
    if not span > 0:
        raise ValueError(f"level range [{low}, {high}] is empty; the scores must differ")
    mos = 1.0 + 4.0 * (target.double() - float(low)) / span
    return mos, None if std is None else 4.0 * std.double() / span


def level_index(mos: torch.Tensor) -> torch.Tensor:
    """Q-Align's level of each score on the 1-5 level scale, as an index into the words.

    Level i (1 = bad .. 5 = excellent) is ``(1 + 0.8 (i - 1) - eps, 1 + 0.8 i + eps]``
    (``get_level`` of gen_soft_label.py): a score on an edge goes to the lower level; scores
    below 1 are bad, above 5 excellent.

    Args:
        mos: ``[B]`` scores on the 1-5 level scale.

    Returns:
        ``[B]`` long indices, 0 = excellent .. 4 = bad.
    """
    mos = mos.double()
    edges = 1.0 + 0.8 * torch.arange(1, 6, dtype=torch.float64, device=mos.device) + EDGE_EPS
    level = torch.searchsorted(edges, mos.contiguous(), right=False).clamp(max=4) + 1
    return 5 - level


def two_level_labels(mos: torch.Tensor) -> torch.Tensor:
    """DeQA-Score's label for a small std: the score split between its two neighbouring levels
    in proportion to its distance to each (``get_binary_probs`` of gen_soft_label.py).

    Args:
        mos: ``[B]`` scores on the 1-5 level scale (clamped to [1, 5]).

    Returns:
        ``[B, 5]`` float64, best level first.
    """
    mos = mos.double().clamp(1.0, 5.0)
    low = torch.ceil(mos - 1.0 - EDGE_EPS).clamp(1, 4)
    left, right = low - EDGE_EPS, low + 1.0 + EDGE_EPS
    upper = (mos - left) / (right - left)
    labels = torch.zeros(*mos.shape, 5, dtype=torch.float64, device=mos.device)
    column = (5 - low).long().unsqueeze(-1)  # best-first index of level ``low``
    labels.scatter_(-1, column, (1.0 - upper).unsqueeze(-1))
    labels.scatter_(-1, column - 1, upper.unsqueeze(-1))
    return labels


def gaussian_labels(
    mos: torch.Tensor,
    std: torch.Tensor,
    density: str = "pdf",
    min_std: float = 0.2,
    max_shift: float = 0.1,
) -> torch.Tensor:
    """DeQA-Score's soft labels from scores and stds on the 1-5 level scale.

    Args:
        mos: ``[B]`` scores on the 1-5 level scale.
        std: ``[B]`` rating stds on the same scale.
        density: ``pdf`` (the density at each level; DeQA-Score's KonIQ and KADID setting) or
            ``cdf`` (the mass of ``[level - 0.5, level + 0.5]``; its SPAQ setting).
        min_std: Below this std the two-level label is used (``thre_std``).
        max_shift: Where the adjusted, clamped label's mean misses the score by more than
            this, the two-level label is used (``thre_diff``).

    Returns:
        ``[B, 5]`` float64 labels, best level first. As in the reference they are not
        renormalised after clamping, so a sum may differ from 1 by a little.
    """
    if density not in DENSITIES:
        raise ValueError(f"density={density!r} must be one of {list(DENSITIES)}")
    mos, std = mos.double(), std.double()
    levels = _LEVELS.to(mos.device)
    mu, sigma = mos.unsqueeze(-1), std.unsqueeze(-1)
    with torch.no_grad():
        if density == "pdf":
            z = (levels - mu) / sigma
            probs = torch.exp(-0.5 * z * z) / (sigma * math.sqrt(2.0 * math.pi))
        else:
            phi = torch.special.ndtr
            probs = phi((levels + 0.5 - mu) / sigma) - phi((levels - 0.5 - mu) / sigma)
        total, mean = probs.sum(-1), probs @ levels
        alpha = (mos - 3.0) / (mean - 3.0 * total + 1e-9)
        beta = (1.0 - alpha * total) / 5.0
        adjusted = (probs * alpha.unsqueeze(-1) + beta.unsqueeze(-1)).clamp(min=0.0)
        shift = (adjusted @ levels - mos).abs()
        fallback = (std < min_std) | ~(shift <= max_shift)
        return torch.where(fallback.unsqueeze(-1), two_level_labels(mos), adjusted)


def histogram_labels(counts: torch.Tensor) -> torch.Tensor:
    """A rating histogram (counts or fractions, worst level first, like KonIQ-10k's
    ``c1 .. c5``) as a distribution, best level first.

    Raises:
        ValueError: A histogram has a negative entry or sums to zero.
    """
    counts = counts.double()
    total = counts.sum(-1, keepdim=True)
    if bool((counts < 0).any()) or bool((total <= 0).any()):
        raise ValueError("a rating histogram has a negative count or no ratings")
    return (counts / total).flip(-1)


def check_level_words(loss: str, words: Sequence[str], weights: Sequence[float], name: str):
    """Raise unless the score head has five words with strictly falling weights (best first).

    Raises:
        ValueError: Naming ``module.loss`` and the score head's words.
    """
    weights = [float(w) for w in weights]
    falling = all(a > b for a, b in zip(weights, weights[1:], strict=False))
    if len(words) != 5 or not falling:
        raise ValueError(
            f"module.loss={loss} trains a distribution over 5 quality levels, best first "
            f"(score=qalign: {', '.join(QALIGN_LEVELS)} with weights 1 .. 0); score={name} has "
            f"words {list(words)} with weights {weights}"
        )


class LevelTargets:
    """Level-distribution targets and losses of ``module.loss=level_ce`` / ``soft_label``.

    Args:
        range: ``observed`` (the references': the lowest and highest score of the dataset's
            images, all splits) or ``declared`` (the dataset's ``mos_range``).
        density: ``pdf`` or ``cdf`` (see :func:`gaussian_labels`).
        min_std: DeQA-Score's ``thre_std`` (1-5 level scale).
        max_shift: DeQA-Score's ``thre_diff`` (1-5 level scale).
        std: The rating std (1-5 level scale) assumed for images whose dataset gives none;
            None: such a batch is an error.
        softmax: ``vocab``: the level words' probabilities come from the softmax over the whole
            vocabulary at the answer position (the references train the next token); ``words``:
            from the softmax over the five words only.
    """

    def __init__(
        self,
        range: str = "observed",  # noqa: A002 - the config key's name
        density: str = "pdf",
        min_std: float = 0.2,
        max_shift: float = 0.1,
        std: float | None = None,
        softmax: str = "vocab",
    ) -> None:
        for key, value, allowed in (
            ("range", range, RANGES),
            ("density", density, DENSITIES),
            ("softmax", softmax, SOFTMAXES),
        ):
            if value not in allowed:
                raise ValueError(f"module.levels.{key}={value!r} must be one of {list(allowed)}")
        if std is not None and not float(std) > 0:
            raise ValueError(f"module.levels.std={std} must be a positive std (1-5 level scale)")
        self.range = range
        self.density = density
        self.min_std = float(min_std)
        self.max_shift = float(max_shift)
        self.std = None if std is None else float(std)
        self.softmax = softmax
        self._bounds: tuple[float, float] | None = (0.0, 1.0) if range == "declared" else None

    def set_bounds(self, observed: tuple[float, float]) -> None:
        """Give the observed ``(min, max)`` target of the dataset's images (all splits); it is
        the range cut into levels with ``range=observed`` and ignored with ``declared``."""
        if self.range == "observed":
            low, high = float(observed[0]), float(observed[1])
            if not high > low:
                raise ValueError(
                    f"module.levels.range=observed: every image of the dataset has the score "
                    f"{low} (target units), so there is no range to cut into levels"
                )
            self._bounds = (low, high)

    @property
    def ready(self) -> bool:
        """Whether the level range is known (always for ``declared``)."""
        return self._bounds is not None

    @property
    def bounds(self) -> tuple[float, float]:
        """The target range cut into levels: the dataset's observed ``(min, max)`` for
        ``range=observed``, ``(0, 1)`` (its declared ``mos_range``) for ``declared``.

        Raises:
            ValueError: ``range=observed`` before :meth:`set_bounds`.
        """
        if self._bounds is None:
            raise ValueError(
                "module.levels.range=observed needs the dataset's lowest and highest score: train "
                "with a data module (it gives target_bounds()), or use module.levels.range=declared"
            )
        return self._bounds

    def level_index(self, target: torch.Tensor) -> torch.Tensor:
        """``[B]`` Q-Align level indices (0 = best) of ``[B]`` targets in [0, 1]."""
        mos, _ = to_level_scale(target, *self.bounds)
        return level_index(mos)

    def levels_of(self, batch: dict) -> torch.Tensor:
        """``[B]`` level indices (0 = best) of a batch: the level words its annotation file's
        answers give (``target_level``, ``dataset.levels_from=answer``) where it has them, else
        :meth:`level_index` of its targets."""
        if "target_level" in batch:
            return batch["target_level"].long()
        return self.level_index(batch["target"])

    def soft_labels(self, batch: dict, what: str = "module.loss=soft_label") -> torch.Tensor:
        """``[B, 5]`` DeQA-Score targets of a batch: its ``target_hist`` where the batch has one
        (``dataset.target=histogram``), else the Gaussian of ``target`` and ``target_std``
        (or :attr:`std`).

        Raises:
            ValueError: The batch has no std and ``std`` is not set.
        """
        if "target_hist" in batch:
            return histogram_labels(batch["target_hist"])
        target = batch["target"]
        if "target_std" in batch:
            mos, std = to_level_scale(target, *self.bounds, batch["target_std"])
        elif self.std is not None:
            mos, _ = to_level_scale(target, *self.bounds)
            std = torch.full_like(mos, self.std)
        else:
            raise ValueError(
                f"{what} needs each image's rating std, but the dataset gives none (no "
                "target_std in the batch); set module.levels.std=<std on the 1-5 level scale>, "
                "or use dataset.target=histogram where the dataset has rating histograms"
            )
        return gaussian_labels(mos, std, self.density, self.min_std, self.max_shift)

    def log_probs(self, logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """``[B, 5]`` fp32 log-probabilities of the level words from ``[B, vocab]`` logits."""
        logits = logits.float()
        if self.softmax == "vocab":
            return torch.log_softmax(logits, -1).index_select(-1, token_ids)
        return torch.log_softmax(logits.index_select(-1, token_ids), -1)


__all__ = [
    "DENSITIES",
    "QALIGN_LEVELS",
    "RANGES",
    "SOFTMAXES",
    "LevelTargets",
    "check_level_words",
    "gaussian_labels",
    "histogram_labels",
    "level_index",
    "to_level_scale",
    "two_level_labels",
]
