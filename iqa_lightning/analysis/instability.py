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

Described runs (perception-then-inference, arXiv 2512.09555: the scorer reads a description
before the quality word, :mod:`~iqa_lightning.analysis.describing`): an answer is a description
sampled from the model (its answer to the perception question, ``temperature`` and ``top_p`` as
above over the whole vocabulary, at most ``analysis.max_new_tokens`` tokens; sample ``s`` of
every batch drawn with torch's generator seeded with ``seed * 100003 + s``) and then the level
word, the argmax over the level words at the score position after that description (first on
ties). ``temperature = 0`` gives the greedy description every time. The rest is as above, and
each answer is checked for a contradiction: the description's polarity
(:func:`~iqa_lightning.analysis.wording.polarity`: -1 when it states an impaired feature or a
negative word without a mild qualifier, +1 when it states none and a positive word, else 0)
against the rating's polarity (a level word's weight rescaled to [0, 1] over the score head's
words: above 0.5 is +1, below -1, exactly 0.5 is 0; Q-Align's excellent/good are +1, fair 0,
poor/bad -1). An answer contradicts when the two have opposite signs; ``contradiction_rate`` =
contradicting answers / all answers, in [0, 1] (``null`` for a run without descriptions).

Written under ``<run>/analysis/``: ``instability.json`` (``instability``, ``mean_score_std``,
``contradiction_rate``, ``described``, ``samples``, ``temperature``, ``top_p``, ``seed``,
``n_images``), ``instability.csv`` (one row per image: ``image_id, levels`` (the sampled words,
``;``-joined, in draw order), ``majority, agreement, score_mean, score_std, contradictions``
(count; empty without descriptions)), ``instability.png`` (histogram of the agreements, with
the instability and the contradiction rate in its title) and,
for a described run, ``instability_answers.csv`` (one row per answer: ``image_id, sample,
level, rating_polarity, description_polarity, contradicts, description``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqa_lightning.analysis import describing
from iqa_lightning.analysis.common import concat, image_ids
from iqa_lightning.analysis.wording import polarity
from iqa_lightning.errors import ConfigError
from iqa_lightning.progress import current

FILES = ("instability.json", "instability.csv", "instability.png")
ANSWERS = "instability_answers.csv"


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
    path (:meth:`~iqa_lightning.models.scorer.LMMWordScorer.logits`); for a described run
    ``[B, samples, words]`` after each sampled description, and the ``descriptions``."""
    ids = scorer.word_head.token_ids.to(pixels.device)
    if describing.is_described(scorer):
        return described_answers(scorer, pixels, options, ids)
    logits = scorer.logits(pixels)
    return {"level_logits": logits.float().index_select(-1, ids)}


def described_answers(scorer, pixels: torch.Tensor, options: Mapping, ids: torch.Tensor):
    """The answers of a described run: per sample ``s`` a description sampled for every image
    of the batch (torch's generator seeded with ``seed * 100003 + s``), then the level-word
    logits at the score position after it."""
    sampling = Sampling.of(options)
    question = describing.question(scorer, options)
    length = describing.max_new_tokens(scorer, options)
    logits, texts = [], []
    progress = current()  # the images' progress advances per sampled answer, not per batch
    for s in range(sampling.samples):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sampling.seed * 100003 + s)
            drawn = describing.generate(scorer, pixels, question, length, sampling.temperature,
                                        sampling.top_p)  # fmt: skip
        with torch.no_grad():
            z = scorer.inference_logits(pixels, drawn).float().index_select(-1, ids)
        logits.append(z)
        texts.append(drawn)
        progress.update(pixels.shape[0] / sampling.samples)
    per_image = [[texts[s][b] for s in range(sampling.samples)] for b in range(pixels.shape[0])]
    return {"level_logits": torch.stack(logits, dim=1), "descriptions": per_image}


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
    descriptions: list[list[str]] | None = None

    @property
    def rating_polarity(self) -> torch.Tensor:
        """``[W]`` +1 / 0 / -1 per level word: its weight rescaled to [0, 1] over the words
        (``(w - min) / (max - min)``) above, at or below 0.5."""
        w = torch.tensor(self.weights, dtype=torch.float64)
        span = float(w.max() - w.min())
        if span == 0:
            return torch.zeros_like(w, dtype=torch.long)
        r = (w - w.min()) / span
        return (r > 0.5).long() - (r < 0.5).long()

    @property
    def description_polarity(self) -> torch.Tensor | None:
        """``[N, samples]`` :func:`~iqa_lightning.analysis.wording.polarity` of each sampled
        description (None for a run without descriptions)."""
        if self.descriptions is None:
            return None
        return torch.tensor([[polarity(t) for t in row] for row in self.descriptions],
                            dtype=torch.long).reshape(self.levels.shape)  # fmt: skip

    @property
    def contradicts(self) -> torch.Tensor | None:
        """``[N, samples]`` whether each answer's description and rating have opposite signs."""
        described = self.description_polarity
        if described is None:
            return None
        return described * self.rating_polarity[self.levels] < 0

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
            "contradiction_rate": None
            if self.contradicts is None or not n
            else float(self.contradicts.double().mean()),
            "described": self.descriptions is not None,
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
        contradicts = self.contradicts
        return [
            {
                "image_id": image_id,
                "levels": ";".join(self.words[int(i)] for i in self.levels[n]),
                "majority": self.words[int(majority[n])],
                "agreement": float(agreement[n]),
                "score_mean": float(scores[n].mean()),
                "score_std": float(scores[n].std(correction=0)),
                "contradictions": "" if contradicts is None else int(contradicts[n].sum()),
            }
            for n, image_id in enumerate(self.image_ids)
        ]


def summarise(batches: list[dict[str, Any]], scorer, options: Mapping) -> Instability:
    """Sample the answers of every image from its level-word logits."""
    sampling = Sampling.of(options)
    if not batches:
        raise ConfigError("instability got no image: the dataset split is empty")
    logits = concat(batches, "level_logits")
    if "descriptions" not in batches[0]:
        return from_logits(logits, scorer.word_head, image_ids(batches), sampling)
    return Instability(
        words=list(scorer.word_head.words),
        weights=[float(w) for w in scorer.word_head.weights.tolist()],
        image_ids=image_ids(batches),
        levels=logits.argmax(-1),
        sampling=sampling,
        descriptions=[row for b in batches for row in b["descriptions"]],
    )


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
        columns = ["image_id", "levels", "majority", "agreement", "score_mean", "score_std",
                   "contradictions"]  # fmt: skip
        out = csv.DictWriter(f, fieldnames=columns)
        out.writeheader()
        for row in rows:
            out.writerow({k: f"{v:.8g}" if isinstance(v, float) else v for k, v in row.items()})
    histogram(result).savefig(paths[2], dpi=120)
    if result.descriptions is not None:
        paths.append(write_answers(result, folder / ANSWERS))
    return paths


def write_answers(result: Instability, path: Path) -> Path:
    """``instability_answers.csv``: one row per answer of a described run."""
    described, rated = result.description_polarity, result.rating_polarity[result.levels]
    contradicts = result.contradicts
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["image_id", "sample", "level", "rating_polarity", "description_polarity",
                      "contradicts", "description"])  # fmt: skip
        for n, image_id in enumerate(result.image_ids):
            for s, text in enumerate(result.descriptions[n]):
                out.writerow([image_id, s, result.words[int(result.levels[n, s])],
                              int(rated[n, s]), int(described[n, s]),
                              int(contradicts[n, s]), text])  # fmt: skip
    return path


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
                 f"{s['n_images']} images\n{contradiction_line(result)}", fontsize=9)  # fmt: skip
    return fig


def contradiction_line(result: Instability) -> str:
    """The contradiction rate as the figure states it: the rate and its count of answers, or
    why there is none (a run without descriptions has nothing to contradict)."""
    contradicts = result.contradicts
    if contradicts is None:
        return "contradiction rate: none (the run answers without a description)"
    if contradicts.numel() == 0:
        return "contradiction rate: none (no answer)"
    return (f"contradiction rate {float(contradicts.double().mean()):.3f} "
            f"({int(contradicts.sum())} of {contradicts.numel()} answers)")  # fmt: skip
