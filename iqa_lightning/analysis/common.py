"""What every analysis shares: the predict step that runs its ``compute`` through a Trainer,
a one-device Trainer, and helpers to join the per-batch outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch


class AnalysisStep(L.LightningModule):
    """The predict step of an analysis: ``compute(scorer, batch["pixels"], options, batch)``
    plus the batch's ``image_id`` (the whole batch goes along for what an analysis reads besides
    the pixels, e.g. a given description). Tensors come back on the CPU; other values (lists
    of texts) as they are.

    Args:
        model: The :class:`~iqa_lightning.module.IQAModule` (a rebuilt run).
        compute: The analysis's ``compute``.
        options: Its options (``analysis.*``).
    """

    def __init__(self, model: torch.nn.Module, compute: Callable, options: Mapping) -> None:
        super().__init__()
        self.model = model
        self.compute = compute
        self.options = options

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        out = self.compute(self.model.scorer, batch["pixels"], self.options, batch)
        out = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in out.items()}
        ids = batch.get("image_id", batch.get("image"))
        if ids is None:
            first = batch_idx * len(batch["pixels"])
            ids = [str(first + i) for i in range(len(batch["pixels"]))]
        out["image_id"] = [str(i) for i in ids]
        return out


def collect(
    trainer: L.Trainer, module: torch.nn.Module, loader, compute: Callable, options: Mapping
) -> list[dict[str, Any]]:
    """``compute`` on every batch of ``loader`` through ``trainer.predict`` (one process).

    Returns:
        The per-batch outputs, in loader order, each with its ``image_id`` list.
    """
    if trainer.world_size > 1:
        from iqa_lightning.cli import ConfigError

        raise ConfigError(
            f"analyses run in one process (the trainer preset has {trainer.world_size}); "
            "use trainer=default or trainer=gpu"
        )
    out = trainer.predict(
        AnalysisStep(module, compute, options), dataloaders=loader, return_predictions=True
    )
    return list(out or [])


def analysis_trainer(**options: Any) -> L.Trainer:
    """A one-device Trainer without logger, checkpoints or progress bar (tests, the API)."""
    from iqa_lightning.scorer import bare_trainer

    return bare_trainer(**options)


def concat(batches: list[dict[str, Any]], key: str) -> torch.Tensor:
    """One tensor of ``key`` over every batch (images along the first dimension)."""
    return torch.cat([b[key] for b in batches]) if batches else torch.empty(0)


def image_ids(batches: list[dict[str, Any]]) -> list[str]:
    return [i for b in batches for i in b["image_id"]]
