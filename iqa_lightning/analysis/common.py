"""What every analysis shares: the predict step that runs its ``compute`` through a Trainer,
a one-device Trainer, and helpers to join the per-batch outputs.

:func:`collect` reports its progress in images (:class:`~iqa_lightning.progress.Progress`: a
bar on a terminal, a line with rate and ETA in the log at most every 30 s); an analysis whose
batch takes several steps (sampled answers) advances it inside the batch with
:func:`iqa_lightning.progress.current`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch

from iqa_lightning.errors import ConfigError
from iqa_lightning.progress import Progress


class AnalysisStep(L.LightningModule):
    """The predict step of an analysis: ``compute(scorer, batch["pixels"], options, batch)``
    plus the batch's ``image_id`` (the whole batch goes along for what an analysis reads besides
    the pixels, e.g. a given description). Tensors come back on the CPU; other values (lists
    of texts) as they are.

    Args:
        model: The :class:`~iqa_lightning.module.IQAModule` (a rebuilt run).
        compute: The analysis's ``compute``.
        options: Its options (``analysis.*``).
        progress: Counts the images done (None: not counted).
    """

    def __init__(
        self, model: torch.nn.Module, compute: Callable, options: Mapping,
        progress: Progress | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.compute = compute
        self.options = options
        self.progress = progress
        self.done = 0

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        out = self.compute(self.model.scorer, batch["pixels"], self.options, batch)
        self.done += len(batch["pixels"])
        if self.progress is not None:
            self.progress.goto(self.done)  # exact, after any partial steps inside the batch
        out = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in out.items()}
        ids = batch.get("image_id", batch.get("image"))
        if ids is None:
            first = batch_idx * len(batch["pixels"])
            ids = [str(first + i) for i in range(len(batch["pixels"]))]
        out["image_id"] = [str(i) for i in ids]
        return out


def collect(
    trainer: L.Trainer, module: torch.nn.Module, loader, compute: Callable, options: Mapping,
    what: str = "analysis",
) -> list[dict[str, Any]]:  # fmt: skip
    """``compute`` on every batch of ``loader`` through ``trainer.predict`` (one process),
    reporting its progress in images as ``what``.

    Returns:
        The per-batch outputs, in loader order, each with its ``image_id`` list.
    """
    if trainer.world_size > 1:
        raise ConfigError(
            f"analyses run in one process (the trainer preset has {trainer.world_size}); "
            "use trainer=default or trainer=gpu"
        )
    total = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
    with Progress(what, total=total, unit="images") as progress:
        step = AnalysisStep(module, compute, options, progress)
        out = trainer.predict(step, dataloaders=loader, return_predictions=True)
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
