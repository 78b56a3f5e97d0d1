"""Grounding: how much the predicted score depends on the features the description mentions.

    python -m iqa_lightning.analyze run=<run folder> analysis=grounding \\
        [analysis.description=run|generated|given] [analysis.max_new_tokens=64]

Perception-then-inference tuning, arXiv 2512.09555 (https://arxiv.org/abs/2512.09555); the
protocol is not published, the definition here is ours. For each image: a description
(:mod:`~iqa_lightning.analysis.describing`: the run's own, its greedy one, or the given one)
and the predicted score ``y`` (a described run's score read after that description; a
one-stage run's score from the image). The description's indicators ``x_f`` in {0, 1}: 1 when
it mentions feature ``f`` as impaired (:class:`~iqa_lightning.analysis.wording.FeatureMentions`,
the keyword lists of :data:`~iqa_lightning.analysis.wording.FEATURE_KEYWORDS`, or
``analysis.features``: feature -> list of regular expressions).

Ordinary least squares of ``y`` on ``[1, x_1 .. x_F]`` (``torch.linalg.lstsq``, fp64, the
``gelsd`` driver). A constant indicator (a feature that no image's or every image's description
mentions) cannot be told apart from the intercept: it is left out of the fit, its weight is
``null`` and it is listed under ``constant``. Indicators that are collinear with each other get
the minimum-norm solution (the fit and its R^2 are still the least-squares ones; ``rank`` says
how many columns are independent). ``r2 = 1 - SS_res / SS_tot`` with ``SS_tot`` the sum of
squares of ``y`` about its mean (``null`` when every score is equal); ``r2_adjusted = 1 - (1 -
r2) (N - 1) / (N - rank)`` (``null`` when ``N <= rank``).

Written under ``<run>/analysis/``: ``grounding.json`` (``r2``, ``r2_adjusted``, ``n_images``,
``rank``, ``intercept``, ``weight_<feature>`` and ``mention_rate_<feature>`` (share of the
images whose description mentions it), ``features``, ``constant``, ``description``),
``grounding.csv`` (one row per image: ``image_id, score, <feature> indicators..., description``)
and ``grounding.png`` (the weights, bars, with R^2 and the mention rates; when every feature is
constant there is no weight to draw, and the figure says so in words, as the log does).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqa_lightning.analysis import describing
from iqa_lightning.analysis.common import concat, image_ids
from iqa_lightning.analysis.wording import FeatureMentions
from iqa_lightning.errors import ConfigError

FILES = ("grounding.json", "grounding.csv", "grounding.png")

log = logging.getLogger(__name__)


def mentions_of(options: Mapping) -> FeatureMentions:
    """The feature detector of ``analysis.features`` (None: the documented lists)."""
    features = options.get("features")
    keywords = None if features is None else {k: list(v) for k, v in features.items()}
    try:
        return FeatureMentions(keywords)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check(options: Mapping) -> None:
    """Check the options before any image is read."""
    describing.check_source(options)
    mentions_of(options)


def compute(scorer, pixels: torch.Tensor, options: Mapping, batch=None) -> dict[str, Any]:
    """One batch: ``score`` ``[B]`` and the ``descriptions`` (texts)."""
    texts = describing.descriptions(scorer, pixels, batch, options)
    return {"score": describing.scores(scorer, pixels, texts).cpu(), "descriptions": texts}


@dataclass
class Fit:
    """An ordinary least squares fit of scores on 0/1 indicators (see the module docstring).

    Attributes:
        intercept: The fitted intercept.
        weights: Per indicator column, its weight, or None for a constant column.
        r2: Coefficient of determination (None when the scores are all equal).
        r2_adjusted: Adjusted for the fit's rank (None when ``N <= rank``).
        rank: Rank of the design matrix (intercept included).
    """

    intercept: float
    weights: list[float | None]
    r2: float | None
    r2_adjusted: float | None
    rank: int


def ols(indicators: torch.Tensor, y: torch.Tensor) -> Fit:
    """OLS of ``y`` ``[N]`` on ``[1, indicators]`` (``indicators`` ``[N, F]``), constant
    columns left out.

    Raises:
        ValueError: Fewer than two images.
    """
    x, y = indicators.double(), y.double().reshape(-1)
    n = int(y.shape[0])
    if n < 2:
        raise ValueError(f"the grounding regression needs at least 2 images, got {n}")
    varies = (x.max(0).values != x.min(0).values) if x.shape[1] else torch.zeros(0, dtype=bool)
    kept = [int(i) for i in torch.nonzero(varies).flatten()]
    design = torch.cat([torch.ones(n, 1, dtype=torch.float64), x[:, kept]], dim=1)
    solution = torch.linalg.lstsq(design, y[:, None], driver="gelsd")
    beta = solution.solution.flatten()
    rank = int(torch.linalg.matrix_rank(design))
    residual = y - design @ beta
    total = float(((y - y.mean()) ** 2).sum())
    scale = max(float(y.abs().max()), 1.0)
    r2 = None if total <= 1e-24 * scale**2 * n else 1.0 - float((residual**2).sum()) / total
    r2_adj = None if r2 is None or n <= rank else 1.0 - (1.0 - r2) * (n - 1) / (n - rank)
    weights: list[float | None] = [None] * x.shape[1]
    for column, index in enumerate(kept):
        weights[index] = float(beta[column + 1])
    return Fit(float(beta[0]), weights, r2, r2_adj, rank)


@dataclass
class Grounding:
    """The result of :func:`summarise`.

    Attributes:
        image_ids: The images, in loader order.
        scores: ``[N]`` predicted scores.
        descriptions: The descriptions read.
        features: The feature names.
        indicators: ``[N, F]`` 0/1 mentions.
        fit: The regression.
        source: ``generated`` or ``given``.
    """

    image_ids: list[str]
    scores: torch.Tensor
    descriptions: list[str]
    features: list[str]
    indicators: torch.Tensor
    fit: Fit
    source: str

    def summary(self) -> dict[str, Any]:
        """What ``grounding.json`` holds."""
        rates = self.indicators.double().mean(0)
        out: dict[str, Any] = {
            "r2": self.fit.r2,
            "r2_adjusted": self.fit.r2_adjusted,
            "n_images": len(self.image_ids),
            "rank": self.fit.rank,
            "intercept": self.fit.intercept,
        }
        for k, feature in enumerate(self.features):
            out[f"weight_{feature}"] = self.fit.weights[k]
            out[f"mention_rate_{feature}"] = float(rates[k])
        out["features"] = list(self.features)
        out["constant"] = [f for f, w in zip(self.features, self.fit.weights, strict=True)
                           if w is None]  # fmt: skip
        out["description"] = self.source
        return out


def from_texts(
    ids: Sequence[str], scores: torch.Tensor, texts: Sequence[str], mentions: FeatureMentions,
    source: str,
) -> Grounding:  # fmt: skip
    """The result for per-image scores and descriptions."""
    indicators = torch.tensor([mentions(t) for t in texts], dtype=torch.long).reshape(
        len(texts), len(mentions.features)
    )
    fit = ols(indicators, scores)
    return Grounding(list(ids), scores.double(), list(texts), mentions.features, indicators, fit,
                     source)  # fmt: skip


def summarise(batches: list[dict[str, Any]], scorer, options: Mapping) -> Grounding:
    """Detect the mentions and fit the regression."""
    if not batches:
        raise ConfigError("grounding got no image: the dataset split is empty")
    texts = [t for b in batches for t in b["descriptions"]]
    try:
        return from_texts(image_ids(batches), concat(batches, "score"), texts,
                          mentions_of(options), describing.source_of(scorer, options))  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from None


def write(result: Grounding, folder: Path) -> list[Path]:
    """Write ``grounding.json``, ``grounding.csv`` and ``grounding.png`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FILES]
    paths[0].write_text(json.dumps(result.summary(), indent=2) + "\n")
    with open(paths[1], "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["image_id", "score", *result.features, "description"])
        for n, image_id in enumerate(result.image_ids):
            flags = [int(v) for v in result.indicators[n]]
            out.writerow([image_id, f"{float(result.scores[n]):.8g}", *flags,
                          result.descriptions[n]])  # fmt: skip
    nothing = nothing_to_show(result)
    if nothing is not None:
        log.warning("grounding.png: nothing to show: %s", nothing)
    bars(result).savefig(paths[2], dpi=120)
    return paths


def nothing_to_show(result: Grounding) -> str | None:
    """Why the weights cannot be drawn (every feature constant: none varies across the images,
    so none has a weight), or None when at least one feature has a weight."""
    if any(w is not None for w in result.fit.weights):
        return None
    s = result.summary()
    always = [f for f in result.features if s[f"mention_rate_{f}"] == 1.0]
    never = [f for f in result.features if f not in always]
    parts = []
    if always:
        parts.append(f"every description mentions {', '.join(always)}")
    if never:
        parts.append(f"no description mentions {', '.join(never)}")
    if not result.features:
        parts.append("no feature is defined (analysis.features is empty)")
    return (
        f"no feature varies across the {s['n_images']} images ({'; '.join(parts)}), so no "
        "feature has a weight on the score"
    )


def bars(result: Grounding):
    """The per-feature weights (a constant feature: no bar, marked), R^2 in the title; when no
    feature has a weight, a figure that says why in words (:func:`nothing_to_show`)."""
    from matplotlib.figure import Figure

    s = result.summary()
    nothing = nothing_to_show(result)
    if nothing is not None:
        fig = Figure(figsize=(6.0, 3.0), layout="constrained")
        ax = fig.subplots()
        ax.set_axis_off()
        ax.set_title(f"grounding: nothing to show ({s['n_images']} images, {s['description']} "
                     "descriptions)", fontsize=9)  # fmt: skip
        ax.text(0.5, 0.5, textwrap.fill(nothing[0].upper() + nothing[1:] + ".", 70),
                ha="center", va="center", fontsize=9, wrap=True)  # fmt: skip
        return fig
    fig = Figure(figsize=(1.6 + 0.8 * len(result.features), 3.4), layout="constrained")
    ax = fig.subplots()
    x = list(range(len(result.features)))
    weights = [0.0 if w is None else w for w in result.fit.weights]
    colours = ["tab:gray" if w is None else ("tab:red" if w < 0 else "tab:blue")
               for w in result.fit.weights]  # fmt: skip
    ax.bar(x, weights, color=colours)
    ax.axhline(0.0, color="black", linewidth=0.6)
    labels = [f"{f}\n{s[f'mention_rate_{f}']:.0%}" + ("\n(constant)" if w is None else "")
              for f, w in zip(result.features, result.fit.weights, strict=True)]  # fmt: skip
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("OLS weight on the score")
    r2 = "undefined" if s["r2"] is None else f"{s['r2']:.3f}"
    ax.set_title(f"grounding: R^2 {r2}, {s['n_images']} images ({s['description']} "
                 "descriptions; % = mention rate)", fontsize=9)  # fmt: skip
    if not math.isfinite(max(map(abs, weights), default=0.0)):
        ax.set_ylim(-1, 1)
    return fig
