"""Training RALI's LLM-free scorer (arXiv 2510.11369) with the package's module and phases.

:class:`RALIModule` is an :class:`~iqa_lightning.module.IQAModule` whose scorer is a
:class:`~iqa_lightning.models.rali.scorer.RALIScorer` (registered as ``rali``: parameter names
``rali.encoder.*``, ``rali.basis``, ``rali.basis_scores``; groups ``encoder``, ``basis``,
``basis_scores``). Everything else is the module's own: the :class:`~iqa_lightning.phases.PhasePlan`
(``stage.phases``), the :class:`~iqa_lightning.callbacks.StageSchedule` switch (a fresh DDP
wrap and optimiser per phase), SRCC / PLCC / KRCC, predictions, checkpoints of the tuned groups.

A phase named in ``contrastive_phases`` trains with the symmetric InfoNCE
(:func:`~iqa_lightning.models.rali.contrastive.info_nce`) between each training image's projected
CLIP image embedding (``rali.embed``) and its teacher text's (``rali.project`` of the stored
text embedding, looked up by ``image_id``); the other phases train with the module's loss (MSE)
on the scores. Validation always scores.

At the end of fitting, and again after testing (the best checkpoint then loaded), the scorer is
exported with :meth:`RALIScorer.save` to ``export_dir`` (rank 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.rali.contrastive import info_nce
from iqa_lightning.models.scorer import QualityScorer, ScoreOutput, prefixed
from iqa_lightning.module import IQAModule

__all__ = ["RALIModule", "RALIParts"]


class RALIParts(QualityScorer):
    """A RALI scorer as the module's scorer: its child ``rali`` (parameter names ``rali.*``)
    and a no-op ``prompt``; its groups by those names."""

    def __init__(self, rali: nn.Module) -> None:
        super().__init__()
        self.rali = rali
        self.prompt = NoPrompt()

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        return {
            group: prefixed("rali", params)
            for group, params in self.rali.parameter_groups().items()
        }

    def score(self, batch: dict[str, Any]) -> ScoreOutput:
        pixels = batch["pixels"]
        return ScoreOutput(self.rali(pixels))

    def distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.rali.distribution(pixels)


class RALIModule(IQAModule):
    """Align a CLIP scorer to teacher texts, then fine-tune it on the scores.

    Args:
        rali: The :class:`~iqa_lightning.models.rali.scorer.RALIScorer` (PCA and basis fitted).
        phases: ``stage.phases`` (groups ``encoder``, ``basis``, ``basis_scores``).
        text_embeddings: ``[N, D]`` CLIP text embeddings of the teacher texts (before the PCA).
        text_ids: The image id of each row of ``text_embeddings``.
        contrastive_phases: Names of the phases trained with the contrastive loss.
        temperature: Softmax temperature of the contrastive loss.
        loss: The score loss of the other phases (``mse``, ``l1``, ``smooth_l1``).
        export_dir: Folder the trained scorer is saved to (None: not exported).
        provenance: JSON facts for the exported ``scorer.json`` (teacher, dataset, run).
    """

    hparams_ignore = (*IQAModule.hparams_ignore, "rali", "text_embeddings", "text_ids")

    def __init__(
        self,
        rali: nn.Module,
        phases: Sequence[Any],
        text_embeddings: torch.Tensor | None = None,
        text_ids: Sequence[str] = (),
        contrastive_phases: Sequence[str] = ("align",),
        temperature: float = 0.07,
        loss: str = "mse",
        export_dir: str | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            backbone=None,
            prompt=NoPrompt(),
            score=None,
            phases=phases,
            loss=loss,
            scorer=RALIParts(rali),
        )
        names = {p.name for p in self.plan}
        self.contrastive_phases = tuple(str(p) for p in contrastive_phases)
        unknown = sorted(set(self.contrastive_phases) - names)
        if unknown:
            raise ValueError(
                f"stage.contrastive.phases names {unknown}, not phases of stage.phases "
                f"({sorted(names)})"
            )
        if not float(temperature) > 0:
            raise ValueError(f"stage.contrastive.temperature={temperature} must be positive")
        self.temperature = float(temperature)
        embeddings = (
            torch.zeros(0, rali.feature_dim) if text_embeddings is None else text_embeddings
        )
        if len(embeddings) != len(text_ids):
            raise ValueError(f"{len(embeddings)} text embeddings for {len(text_ids)} image ids")
        if self.contrastive_phases and len(text_ids) == 0:
            raise ValueError(
                f"phases {list(self.contrastive_phases)} train the contrastive loss, but no "
                "teacher text embeddings were given"
            )
        self.register_buffer("text_embeddings", embeddings.float().clone(), persistent=False)
        self.text_rows = {str(i): row for row, i in enumerate(text_ids)}
        self.export_dir = Path(export_dir) if export_dir else None
        self.provenance = dict(provenance or {})

    @property
    def rali(self) -> nn.Module:
        """The RALI scorer being trained."""
        return self.scorer.rali

    # ---------------------------------------------------------------- training
    def texts_of(self, image_ids: Sequence[str]) -> torch.Tensor:
        """``[B, D]`` teacher text embeddings of a batch's images.

        Raises:
            KeyError: An image without a teacher text (named).
        """
        missing = [i for i in image_ids if i not in self.text_rows]
        if missing:
            raise KeyError(f"no teacher text for training image(s) {missing[:3]}")
        rows = torch.tensor([self.text_rows[i] for i in image_ids], device=self.device)
        return self.text_embeddings[rows]

    def contrastive_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """InfoNCE of the batch's projected image and teacher-text embeddings."""
        images = self.rali.embed(batch["pixels"])
        texts = self.rali.project(self.texts_of(list(batch["image_id"])))
        return info_nce(images, texts, self.temperature)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.phase.name not in self.contrastive_phases:
            return super().training_step(batch, batch_idx)
        loss = self.contrastive_loss(batch)
        size = batch["pixels"].shape[0]
        self.log("train/loss_contrastive", loss, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    # ------------------------------------------------------------------ export
    def export(self) -> Path | None:
        """Save the scorer to :attr:`export_dir` (rank 0); returns the folder."""
        if self.export_dir is None or (
            self._trainer is not None and not self.trainer.is_global_zero
        ):
            return None
        provenance = {**self.provenance, "phase": self.phase.name}
        return self.rali.save(self.export_dir, provenance)

    def on_fit_end(self) -> None:
        self.export()

    def on_test_end(self) -> None:
        self.export()
