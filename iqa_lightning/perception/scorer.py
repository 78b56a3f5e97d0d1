"""Scores inferred from a description: the inference stage of perception-then-inference tuning.

"Building Reasonable Inference for Vision-Language Models in Blind Image Quality Assessment"
(Li, Sun, Chen, Nishida; ICONIP 2025; arXiv 2512.09555). Stage 1 (perception) learns to
describe an image's basic visual features; stage 2 (inference) rates quality from that
description. :class:`DescriptionScorer` is an
:class:`~iqa_lightning.models.scorer.LMMWordScorer` whose score prompt is the inference prompt
(:mod:`~iqa_lightning.perception.prompts`): the score question and a description, with the
image (``image="visible"``) or without any image token (``image="none"``, the paper's "solely
from these features"); ``image="dialogue"`` is the describe-then-rate baseline: one
conversation in which the model is asked the perception question with the image, answers with
the description, and is then asked the score question. The quality word is read at the answer position by the same
:class:`~iqa_lightning.models.score.WordScore` as every other scorer.

Which description: ``description="generated"`` (default at evaluation) is the model's own
greedy answer to the perception question (:func:`~iqa_lightning.perception.describe.describe`);
``"given"`` is the ground truth of ``descriptions`` looked up by image id. Training always reads
the ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from iqa_lightning.data.instruct.descriptions import PERCEPTION_QUESTION
from iqa_lightning.models.scorer import LMMWordScorer, ScoreOutput
from iqa_lightning.perception.describe import describe
from iqa_lightning.perception.prompts import DESCRIPTION_LEAD, InferenceBatch, inference_batch

__all__ = ["DESCRIPTION_MODES", "IMAGE_MODES", "DescriptionScorer"]

IMAGE_MODES = ("none", "visible", "dialogue")
DESCRIPTION_MODES = ("generated", "given")


class DescriptionScorer(LMMWordScorer):
    """Quality from the logits of quality words after a description (module docstring).

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone`.
        prompt: A pixel prompt or feature prompter (as :class:`LMMWordScorer`).
        score: The :class:`~iqa_lightning.models.score.WordScore` head; its ``question`` and
            ``answer_prefix`` frame the inference prompt.
        descriptions: Ground truth by image id: a callable ``image_id -> str`` raising
            ``KeyError`` for an undescribed image
            (:class:`~iqa_lightning.perception.descriptions.SyntheticDescriptions`, ...).
        question: The perception question (``perception.question``).
        image: ``none``, ``visible`` or ``dialogue`` (``inference.image``).
        description: ``generated`` or ``given`` (``inference.description``): what evaluation
            reads.
        max_new_tokens: Length limit of generated descriptions (``inference.max_new_tokens``).
        lead: Text before the description (``inference.description_lead``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        prompt: nn.Module,
        score,
        descriptions,
        question: str = PERCEPTION_QUESTION,
        image: str = "none",
        description: str = "generated",
        max_new_tokens: int = 64,
        lead: str = DESCRIPTION_LEAD,
    ) -> None:
        if image not in IMAGE_MODES:
            raise ValueError(f"inference.image={image!r} must be one of {list(IMAGE_MODES)}")
        if description not in DESCRIPTION_MODES:
            raise ValueError(
                f"inference.description={description!r} must be one of {list(DESCRIPTION_MODES)}"
            )
        if int(max_new_tokens) < 1:
            raise ValueError(f"inference.max_new_tokens={max_new_tokens} must be at least 1")
        if not callable(descriptions):
            raise TypeError("perception.descriptions must map an image id to its description")
        super().__init__(backbone, prompt, score)
        self.descriptions = descriptions
        self.question = str(question)
        self.image = image
        self.description = description
        self.max_new_tokens = int(max_new_tokens)
        self.lead = str(lead)

    # ------------------------------------------------------------ descriptions
    def ground_truth(self, image_ids: Sequence[str]) -> list[str]:
        """The ground-truth description of each image (``KeyError`` naming a missing one)."""
        return [self.descriptions(str(i)) for i in image_ids]

    def generated(self, pixels: torch.Tensor) -> list[str]:
        """The model's greedy description of each image."""
        return describe(self, pixels, self.question, self.max_new_tokens)

    def descriptions_for(
        self, pixels: torch.Tensor, image_ids: Sequence[str] | None = None, mode: str | None = None
    ) -> list[str]:
        """The descriptions evaluation reads: ``mode`` (default :attr:`description`)
        ``generated`` or ``given`` (needs ``image_ids``)."""
        mode = mode or self.description
        if mode == "given":
            if image_ids is None:
                raise ValueError(
                    "inference.description=given needs the images' ids to look up their "
                    "descriptions; these inputs have none (use inference.description=generated)"
                )
            return self.ground_truth(image_ids)
        return self.generated(pixels)

    # ----------------------------------------------------------- the prompt
    def inference_inputs(self, descriptions: Sequence[str]) -> InferenceBatch:
        """The batch's inference prompts (ids, mask and per-row token spans)."""
        return inference_batch(
            self.backbone, self.head.question, list(descriptions), self.image != "none",
            self.head.answer_prefix, self.lead,
            ask=self.question if self.image == "dialogue" else None,
        )  # fmt: skip

    def image_input(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """What the backbone gets as pixels: the prompted image, or None with ``image=none``."""
        return self.prompt(pixels) if self.image != "none" else None

    def inference_logits(self, pixels: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        """``[B, vocab]`` next-token logits at the answer position of the inference prompt."""
        batch = self.inference_inputs(descriptions)
        ids, mask = batch.ids.to(pixels.device), batch.mask.to(pixels.device)
        if self.image == "none":
            return self.backbone.next_token_logits(None, ids, mask)
        with self.features([self.head.question] * pixels.shape[0]):
            return self.backbone.next_token_logits(self.image_input(pixels), ids, mask)

    def scores_from(self, pixels: torch.Tensor, descriptions: Sequence[str]) -> torch.Tensor:
        """Quality scores ``[B]`` (fp32) read after the given descriptions."""
        return self.head(self.inference_logits(pixels, descriptions))

    # ---------------------------------------------------------------- forward
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, vocab]`` logits at the answer position after the model's own descriptions."""
        return self.inference_logits(pixels, self.descriptions_for(pixels, mode="generated"))

    def score(self, batch: dict[str, Any]) -> ScoreOutput:
        """Scores read after the batch's ``descriptions`` where it has them (training reads
        the ground truth this way), else after the descriptions evaluation reads
        (:attr:`description`); each row's description is in ``extras["description"]``."""
        pixels = batch["pixels"]
        descriptions = batch.get("descriptions")
        if descriptions is None:
            descriptions = self.descriptions_for(pixels, batch.get("image_id"))
        descriptions = list(descriptions)
        return self.output(self.inference_logits(pixels, descriptions), description=descriptions)

    def describe_loss(self, pixels: torch.Tensor, image_ids: Sequence[str]) -> torch.Tensor:
        """Next-token loss of the ground-truth descriptions as answers to the perception
        question (the perception stage's objective)."""
        answers = self.ground_truth(image_ids)
        return self.instruct_loss(pixels, [[(self.question, a)] for a in answers])
