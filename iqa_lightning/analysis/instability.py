"""Instability: how often repeated sampled answers of the same image disagree.

    python -m iqa_lightning.analyze run=<run folder> analysis=instability \\
        [analysis.samples=10] [analysis.temperature=1.0] [analysis.top_p=1.0] [analysis.seed=0]

Definition. Each image goes through the run's scoring path exactly as scoring does (pixel prompt
or feature prompter, backbone, the logits ``z`` of the score head's ``W`` level words at the
score position: the logits :class:`~iqa_lightning.models.score.WordScore` reads). An answer is
one level word sampled from ``p = softmax(z / temperature)`` over those ``W`` words only (never
a generated token). With ``top_p < 1`` only the smallest set of most probable words whose
probabilities sum to at least ``top_p`` is kept (the most probable word always is) and ``p`` is
renormalised over it. ``temperature = 0`` answers the most probable word every time (the first
in ``score.words`` order on ties), so it is deterministic. ``samples`` answers are drawn per
image, independently, with ``torch.multinomial`` from one generator seeded with ``seed``,
images in dataset order. An answer's score is its word's weight in the score head.

Per image: ``agreement`` = the share of the answers that are the majority level (the most
frequent word; ties go to the word listed first in ``score.words``); the score mean and standard
deviation (population: divided by ``samples``) of the sampled scores. Over the images:
``instability`` = the fraction of images whose answers are not all equal (``agreement < 1``), in
[0, 1]; ``mean_score_std`` = the mean of the per-image standard deviations.

Written under ``<run>/analysis/``: ``instability.json`` (``instability``, ``mean_score_std``,
``samples``, ``temperature``, ``top_p``, ``seed``, ``n_images``), ``instability.csv`` (one row
per image: ``image_id, levels`` (the sampled words, ``;``-joined, in draw order), ``majority,
agreement, score_mean, score_std``) and ``instability.png`` (histogram of the agreements).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqa_lightning.analysis.common import concat, image_ids

FILES = ("instability.json", "instability.csv", "instability.png")


@dataclass(frozen=True)
class Sampling:
    """The sampling settings (``analysis.samples``, ``temperature``, ``top_p``, ``seed``)."""

    samples: int = 10
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def of(cls, options: Mapping) -> Sampling:
        """The settings of ``options``, checked.

        Raises:
            ConfigError: A setting is out of range; names the key.
        """
        from iqa_lightning.cli import ConfigError

        s = cls(
            samples=int(options.get("samples", 10)),
            temperature=float(options.get("temperature", 1.0)),
            top_p=float(options.get("top_p", 1.0)),
            seed=int(options.get("seed", 0)),
        )
        if s.samples < 1:
            raise ConfigError(f"analysis.samples={s.samples} must be a positive integer")
        if not s.temperature >= 0:
            raise ConfigError(f"analysis.temperature={s.temperature} must be >= 0")
        if not 0 < s.top_p <= 1:
            raise ConfigError(f"analysis.top_p={s.top_p} must be in (0, 1]")
        return s


def check(options: Mapping) -> None:
    """Check the options before any image is read."""
    Sampling.of(options)


def compute(scorer, pixels: torch.Tensor, options: Mapping, batch=None) -> dict[str, torch.Tensor]:
    """One batch: ``level_logits`` ``[B, words]`` (fp32), read through the scorer's own forward
    path (:meth:`~iqa_lightning.models.scorer.LMMWordScorer.logits`)."""
    logits = scorer.logits(pixels)
    ids = scorer.score.token_ids.to(logits.device)
    return {"level_logits": logits.float().index_select(-1, ids)}


def level_probabilities(level_logits: torch.Tensor, temperature: float, top_p: float = 1.0):
    """``[N, W]`` sampling distribution over the level words (see the module docstring)."""
    z = level_logits.double()
    if temperature == 0:
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).double()
    p = torch.softmax(z / temperature, dim=-1)
    if top_p < 1:
        order = p.argsort(dim=-1, descending=True, stable=True)
        sorted_p = p.gather(-1, order)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the more probable words
        keep_sorted = before < top_p
        keep_sorted[..., 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        p = torch.where(keep, p, torch.zeros_like(p))
        p = p / p.sum(-1, keepdim=True)
    return p


def sample_levels(level_logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """``[N, samples]`` sampled level indices (into ``score.words``)."""
    p = level_probabilities(level_logits, sampling.temperature, sampling.top_p)
    if sampling.temperature == 0:
        return p.argmax(-1, keepdim=True).expand(-1, sampling.samples).clone()
    generator = torch.Generator().manual_seed(sampling.seed)
    return torch.multinomial(p.float(), sampling.samples, replacement=True, generator=generator)


@dataclass
class Instability:
    """The result of :func:`summarise`.

    Attributes:
        words: The score head's level words; ``weights``: their weights.
        image_ids: The images, in dataset order.
        levels: ``[N, samples]`` sampled level indices.
        sampling: The settings.
    """

    words: list[str]
    weights: list[float]
    image_ids: list[str]
    levels: torch.Tensor
    sampling: Sampling

    @property
    def scores(self) -> torch.Tensor:
        """``[N, samples]`` fp64 sampled scores (the sampled words' weights)."""
        return torch.tensor(self.weights, dtype=torch.float64)[self.levels]

    @property
    def majority(self) -> torch.Tensor:
        """``[N]`` index of each image's most frequent level (first word on ties)."""
        return self.counts.argmax(-1)

    @property
    def counts(self) -> torch.Tensor:
        """``[N, W]`` how often each level was sampled."""
        counts = torch.zeros(len(self.levels), len(self.words), dtype=torch.long)
        return counts.scatter_add(-1, self.levels, torch.ones_like(self.levels))

    @property
    def agreement(self) -> torch.Tensor:
        """``[N]`` share of each image's answers that are its majority level."""
        return self.counts.max(-1).values.double() / self.sampling.samples

    @property
    def score_std(self) -> torch.Tensor:
        return self.scores.std(-1, correction=0)

    def summary(self) -> dict[str, Any]:
        """What ``instability.json`` holds."""
        n = len(self.image_ids)
        return {
            "instability": float((self.agreement < 1).double().mean()) if n else 0.0,
            "mean_score_std": float(self.score_std.mean()) if n else 0.0,
            "samples": self.sampling.samples,
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "seed": self.sampling.seed,
            "n_images": n,
            "words": list(self.words),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per image, as ``instability.csv`` holds them."""
        scores, majority, agreement = self.scores, self.majority, self.agreement
        return [
            {
                "image_id": image_id,
                "levels": ";".join(self.words[int(i)] for i in self.levels[n]),
                "majority": self.words[int(majority[n])],
                "agreement": float(agreement[n]),
                "score_mean": float(scores[n].mean()),
                "score_std": float(scores[n].std(correction=0)),
            }
            for n, image_id in enumerate(self.image_ids)
        ]


def summarise(batches: list[dict[str, Any]], scorer, options: Mapping) -> Instability:
    """Sample the answers of every image from its level-word logits."""
    sampling = Sampling.of(options)
    if not batches:
        from iqa_lightning.cli import ConfigError

        raise ConfigError("instability got no image: the dataset split is empty")
    logits = concat(batches, "level_logits")
    return from_logits(logits, scorer.score, image_ids(batches), sampling)


def from_logits(level_logits: torch.Tensor, score, ids: list[str], sampling: Sampling):
    """The result for ``[N, W]`` level-word logits of the score head ``score``."""
    return Instability(
        words=list(score.words),
        weights=[float(w) for w in score.weights.tolist()],
        image_ids=list(ids),
        levels=sample_levels(level_logits, sampling),
        sampling=sampling,
    )


def write(result: Instability, folder: Path) -> list[Path]:
    """Write ``instability.json``, ``instability.csv`` and ``instability.png`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FILES]
    paths[0].write_text(json.dumps(result.summary(), indent=2) + "\n")
    rows = result.rows()
    with open(paths[1], "w", newline="", encoding="utf-8") as f:
        columns = ["image_id", "levels", "majority", "agreement", "score_mean", "score_std"]
        out = csv.DictWriter(f, fieldnames=columns)
        out.writeheader()
        for row in rows:
            out.writerow({k: f"{v:.8g}" if isinstance(v, float) else v for k, v in row.items()})
    histogram(result).savefig(paths[2], dpi=120)
    return paths


def histogram(result: Instability):
    """Histogram of the per-image agreements (one bar per possible value ``k / samples``)."""
    from matplotlib.figure import Figure

    n = result.sampling.samples
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    edges = [(k - 0.5) / n for k in range(1, n + 2)]
    ax.hist(result.agreement.numpy(), bins=edges, color="tab:blue", edgecolor="white")
    ax.set_xlim(0, 1 + 0.5 / n)
    ax.set_xlabel(f"agreement (share of {n} answers that are the majority level)")
    ax.set_ylabel("images")
    s = result.summary()
    ax.set_title(f"instability {s['instability']:.3f} at temperature {s['temperature']:g}, "
                 f"{s['n_images']} images", fontsize=9)  # fmt: skip
    return fig
