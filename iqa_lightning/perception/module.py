"""Perception-then-inference tuning as phases of one LightningModule (arXiv 2512.09555).

:class:`PerceptionInferenceModule` is an :class:`~iqa_lightning.module.IQAModule` scoring
through a :class:`~iqa_lightning.perception.scorer.DescriptionScorer`. It trains on the score
data module's batches (``pixels``, ``image_id``, ``target``); what a training step optimises
depends on the current phase:

- a phase named in ``perception_phases`` (``perception``): next-token loss of each image's
  ground-truth description as the answer to the perception question (``train/loss_describe``);
- any other phase (``inference``): the score loss (``module.loss``, MSE by default) of the
  score read after the ground-truth description (``train/loss_score``), plus ``keep_weight``
  times the description loss, so that the same LoRA still writes the descriptions evaluation
  reads (``keep_weight=0``: the score loss alone).

Validation and test score as ``inference.description`` says (the model's own greedy
description, or the ground truth); validation also logs ``val/loss_describe``. Each test row
carries the description its score was read after (``description``), which the
:class:`~iqa_lightning.callbacks.PredictionWriter` writes to ``descriptions_test.csv``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from iqa_lightning.data.instruct.descriptions import PERCEPTION_QUESTION
from iqa_lightning.module import IQAModule
from iqa_lightning.perception.prompts import DESCRIPTION_LEAD
from iqa_lightning.perception.scorer import DescriptionScorer
from iqa_lightning.tasks import task_of

__all__ = ["PerceptionInferenceModule"]


class PerceptionInferenceModule(IQAModule):
    """Perception (describe) and inference (rate from the description) phases.

    Args:
        backbone, prompt, score, phases: As :class:`~iqa_lightning.module.IQAModule`.
        descriptions: Ground truth by image id (``perception.descriptions``).
        question: The perception question (``perception.question``).
        perception_phases: Names of the phases trained on descriptions
            (``perception.phases``).
        keep_weight: Weight of the description loss in the other phases
            (``perception.keep_weight``).
        image: ``none``, ``visible`` or ``dialogue`` (``inference.image``).
        description: ``generated`` or ``given`` (``inference.description``).
        max_new_tokens: Length limit of generated descriptions (``inference.max_new_tokens``).
        lead: Text before the description (``inference.description_lead``).
        **kwargs: Other :class:`~iqa_lightning.module.IQAModule` arguments (``lora``,
            ``task_weights``, ``loss``, ``levels``, ...); a level loss (``level_ce``,
            ``soft_label``) is read from the level words' logits after the description.
    """

    hparams_ignore = (*IQAModule.hparams_ignore, "descriptions")

    def __init__(
        self,
        backbone,
        prompt,
        score,
        phases,
        descriptions,
        question: str = PERCEPTION_QUESTION,
        perception_phases: Sequence[str] = ("perception",),
        keep_weight: float = 1.0,
        image: str = "none",
        description: str = "generated",
        max_new_tokens: int = 64,
        lead: str = DESCRIPTION_LEAD,
        **kwargs: Any,
    ) -> None:
        if float(keep_weight) < 0:
            raise ValueError(f"perception.keep_weight={keep_weight} must be >= 0")
        scorer = functools.partial(
            DescriptionScorer, descriptions=descriptions, question=question, image=image,
            description=description, max_new_tokens=max_new_tokens, lead=lead,
        )  # fmt: skip
        super().__init__(backbone, prompt, score, phases, scorer=scorer, **kwargs)
        names = [p.name for p in self.phases]
        unknown = [p for p in perception_phases if p not in names]
        if unknown:
            raise ValueError(f"perception.phases names {unknown}, but stage.phases are {names}")
        self.perception_phases = tuple(str(p) for p in perception_phases)
        self.keep_weight = float(keep_weight)

    @property
    def describing(self) -> bool:
        """Whether the current phase trains on descriptions (a perception phase)."""
        return self.phase.name in self.perception_phases

    def _given(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with its images' ground-truth descriptions (what training reads)."""
        return {**batch, "descriptions": self.scorer.ground_truth(batch["image_id"])}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if task_of(batch) != "score":
            return super().training_step(batch, batch_idx)
        pixels, ids, size = batch["pixels"], batch["image_id"], batch["pixels"].shape[0]
        if self.describing:
            loss = self.scorer.describe_loss(pixels, ids)
            self.log("train/loss_describe", loss, batch_size=size)
        else:
            _, loss = self.score_step(self._given(batch))
            self.log("train/loss_score", loss, batch_size=size)
            if self.keep_weight > 0:
                kept = self.scorer.describe_loss(pixels, ids)
                self.log("train/loss_describe", kept, batch_size=size)
                loss = loss + self.keep_weight * kept
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        super()._eval_step(batch, stage)
        if task_of(batch) == "score" and stage == "val":
            describe = self.scorer.describe_loss(batch["pixels"], batch["image_id"])
            self.log("val/loss_describe", describe, batch_size=len(batch["image_id"]))
