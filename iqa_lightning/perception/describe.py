"""Greedy descriptions of a batch of images: the perception stage's output.

The model answers the perception question (``perception.question``, default
:data:`~iqa_lightning.data.instruct.descriptions.PERCEPTION_QUESTION`) about each image with
greedy decoding (``do_sample=False``, at most ``max_new_tokens`` tokens), through the scorer's
full image path (pixel prompt, feature prompter conditioned on the question, backbone). The
answer is stripped of surrounding white space; an empty answer becomes :data:`EMPTY`, so the
inference prompt always has a description to read.
"""

from __future__ import annotations

import torch

__all__ = ["EMPTY", "describe"]

#: What an empty generated description is replaced with.
EMPTY = "none"


@torch.no_grad()
def describe(scorer, pixels: torch.Tensor, question: str, max_new_tokens: int) -> list[str]:
    """Greedy descriptions of ``pixels`` ``[B, 3, R, R]`` (one per image).

    Args:
        scorer: An :class:`~iqa_lightning.models.scorer.LMMWordScorer` (or subclass).
        pixels: Images in [0, 1].
        question: The perception question.
        max_new_tokens: Length limit of each description.
    """
    backbone = scorer.backbone
    was_training = backbone.training
    backbone.train(False)
    try:
        answers = scorer.generate(pixels, [question] * pixels.shape[0], int(max_new_tokens))
    finally:
        backbone.train(was_training)
    return [a.strip() or EMPTY for a in answers]
