"""Quality explanations generated on a few validation images, for the run folder and W&B."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import FSDPStrategy

log = logging.getLogger(__name__)


def first_images(datamodule, count: int) -> tuple[torch.Tensor, list[str]] | None:
    """Up to ``count`` validation images with their ids, from the first loader that has ids."""
    loaders = datamodule.val_dataloader()
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        batch = next(iter(loader), None)
        if batch is not None and "image_id" in batch:
            return batch["pixels"][:count], list(batch["image_id"][:count])
    return None


class ExplanationWriter(L.Callback):
    """At the end of training, asks the model to explain the quality of a few validation images.

    Writes ``explanations.csv`` (image_id, question, explanation) in the run folder and logs
    the same as a W&B table when W&B is on.

    Args:
        output_dir: The run folder.
        question: The instruction shown with each image.
        num_images: How many validation images.
        max_new_tokens: Length limit of each explanation.
    """

    def __init__(
        self,
        output_dir: str,
        question: str = "Describe the quality of this image in detail.",
        num_images: int = 4,
        max_new_tokens: int = 48,
    ) -> None:
        self.path = Path(output_dir) / "explanations.csv"
        self.question = question
        self.num_images = int(num_images)
        self.max_new_tokens = int(max_new_tokens)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.num_images <= 0 or trainer.datamodule is None:
            return
        if "instruct" not in pl_module.scorer.tasks:
            return  # a scorer that writes no text
        if isinstance(trainer.strategy, FSDPStrategy):  # one rank cannot run a sharded model
            log.warning("explanations.csv is not written under FSDP (callbacks.explanations)")
            return
        found = first_images(trainer.datamodule, self.num_images)
        if found is None:
            return
        pixels, image_ids = found
        questions = [self.question] * len(image_ids)
        answers = pl_module.explain(pixels, questions, self.max_new_tokens)
        rows = [[i, self.question, a] for i, a in zip(image_ids, answers, strict=True)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "question", "explanation"])
            writer.writerows(rows)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    "explanations", columns=["image_id", "question", "explanation"], data=rows
                )
