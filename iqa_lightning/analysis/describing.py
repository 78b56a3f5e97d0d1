"""Descriptions for the analyses that read them (grounding, instability of described runs).

A run whose scorer reads a description before the quality word (perception-then-inference
tuning, arXiv 2512.09555, :class:`~iqa_lightning.perception.scorer.DescriptionScorer`) is a
*described* run; any other run (the one-stage baseline) is scored from the image alone.

``analysis.description`` says which description each image gets:

- ``run`` (default): what the run itself reads at evaluation (a described run's
  ``inference.description``; a one-stage run: ``generated``);
- ``generated``: the run's model's own greedy answer to the perception question
  (``analysis.question``, default the run's ``perception.question`` or
  :data:`DEFAULT_QUESTION`), at most ``analysis.max_new_tokens`` tokens (default the run's
  ``inference.max_new_tokens`` or 64), greedy, through the run's image path;
- ``given``: the ground truth, by image id: the described run's own source, else the one
  ``analysis.descriptions`` names (a Hydra node, e.g.
  ``{_target_: iqa_lightning.perception.descriptions.SyntheticDescriptions}``).

The score of an image is what the run predicts: a described run's score read after that
description; a one-stage run's score from the image (its prompt holds no description).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import torch

from iqa_lightning.errors import ConfigError

SOURCES = ("run", "generated", "given")
#: The perception question when neither the run nor ``analysis.question`` gives one.
DEFAULT_QUESTION = "Describe the basic visual features of this image."


def is_described(scorer) -> bool:
    """Whether the run's scorer reads a description before the quality word."""
    return hasattr(scorer, "scores_from") and hasattr(scorer, "descriptions_for")


def check_source(options: Mapping) -> None:
    """``analysis.description`` and ``analysis.max_new_tokens`` are usable."""
    source = options.get("description", "run")
    if source not in SOURCES:
        raise ConfigError(f"analysis.description={source!r} must be one of {list(SOURCES)}")
    if options.get("max_new_tokens") is not None and int(options.get("max_new_tokens")) < 1:
        raise ConfigError(f"analysis.max_new_tokens={options.get('max_new_tokens')} must be >= 1")


def question(scorer, options: Mapping) -> str:
    """The perception question the descriptions answer."""
    given = options.get("question")
    if given:
        return str(given)
    return str(getattr(scorer, "question", None) or DEFAULT_QUESTION)


def source_of(scorer, options: Mapping) -> str:
    """``generated`` or ``given``: ``analysis.description`` with ``run`` resolved."""
    source = options.get("description", "run")
    if source == "run":
        return scorer.description if is_described(scorer) else "generated"
    return source


@lru_cache(maxsize=4)
def _instantiate(node_yaml: str):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.create(node_yaml))


def ground_truth(scorer, options: Mapping, image_ids: Sequence[str]) -> list[str]:
    """The given descriptions of ``image_ids``.

    Raises:
        ConfigError: No source (a one-stage run without ``analysis.descriptions``), or an image
            without a description (names it).
    """
    node = options.get("descriptions")
    if node is not None:
        from omegaconf import OmegaConf

        lookup = _instantiate(OmegaConf.to_yaml(node))
    elif is_described(scorer):
        lookup = scorer.descriptions
    else:
        raise ConfigError(
            "analysis.description=given: this run reads no description; name the source with "
            "analysis.descriptions._target_=iqa_lightning.perception.descriptions."
            "SyntheticDescriptions (or another)"
        )
    try:
        return [str(lookup(str(i))) for i in image_ids]
    except KeyError as err:
        raise ConfigError(str(err.args[0]) if err.args else str(err)) from None


def generate(
    scorer, pixels: torch.Tensor, text: str, max_new_tokens: int, temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[str]:  # fmt: skip
    """The model's answers to ``text`` about each image through the scorer's image path
    (pixel prompt, prompter conditioned on the question), stripped; greedy at
    ``temperature=0``. An empty answer becomes ``"none"``."""
    questions = [text] * pixels.shape[0]
    with torch.no_grad(), scorer.features(questions):
        answers = scorer.backbone.generate(
            scorer.prompt(pixels), questions, int(max_new_tokens), temperature, top_p
        )
    return [a.strip() or "none" for a in answers]


def descriptions(scorer, pixels: torch.Tensor, batch: Mapping | None, options: Mapping):
    """Each image's description by ``analysis.description`` (module docstring)."""
    if source_of(scorer, options) == "given":
        ids = None if batch is None else batch.get("image_id")
        if ids is None:
            raise ConfigError("analysis.description=given needs image ids in the batches")
        return ground_truth(scorer, options, ids)
    return generate(scorer, pixels, question(scorer, options), max_new_tokens(scorer, options))


def max_new_tokens(scorer, options: Mapping) -> int:
    """``analysis.max_new_tokens``, else the run's ``inference.max_new_tokens``, else 64."""
    given = options.get("max_new_tokens")
    return int(given if given is not None else getattr(scorer, "max_new_tokens", 64))


def scores(scorer, pixels: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """``[B]`` predicted scores: after ``texts`` for a described run, else from the image."""
    with torch.no_grad():
        if is_described(scorer):
            return scorer.scores_from(pixels, list(texts)).float()
        return scorer(pixels).float()
