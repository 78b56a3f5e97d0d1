"""Training progress in the run's log file (``<run>/train.log``), not only on a terminal.

Lightning's progress bar redraws one terminal line; a log file gets nothing of it until the end.
:class:`ProgressLog` logs, through the ``iqa_lightning.progress`` logger and on rank 0 only, a
line per running loop at most every ``every`` seconds and one when the loop ends::

    epoch 3 train: 120/480 steps (25%), 3.1/s, ETA 1m56s, loss 0.0123
    epoch 3 train: 480/480 steps in 2m35s (3.1/s), loss 0.0101
    epoch 3 validation: 60/60 batches in 12s (5.0/s)
    test: 60/60 batches in 12s (5.0/s)

(:class:`~iqa_lightning.progress.Progress` writes them; ``loss`` is the last training step's.)
The sanity check before training is not reported.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch

from iqa_lightning.progress import Progress

log = logging.getLogger("iqa_lightning.progress")


def _total(batches: Any) -> float | None:
    """Batches of a loop: an int, or a list of per-dataloader counts (inf: unknown)."""
    if isinstance(batches, (list, tuple)):
        values = [float(b) for b in batches]
        total = sum(values) if values else 0.0
    else:
        total = float(batches)
    return total if math.isfinite(total) else None


def _loss(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    return outputs if isinstance(outputs, torch.Tensor) and outputs.numel() == 1 else None


class ProgressLog(L.Callback):
    """Periodic progress lines of training, validation and test loops (see the module docstring).

    Args:
        every: Seconds between two lines of one loop (None: ``$IQA_PROGRESS_SECONDS`` or 30);
            each loop also logs a line when it ends.
    """

    def __init__(self, every: float | str | None = None) -> None:
        super().__init__()
        self.every = None if every is None else float(every)
        self._loops: dict[str, Progress] = {}
        self._loss: torch.Tensor | None = None

    def _note(self) -> str:
        if self._loss is None:
            return ""
        value = float(self._loss.float().cpu())
        return f"loss {value:.4g}"

    def _start(self, trainer: L.Trainer, key: str, what: str, batches: Any, unit: str,
               note: bool = False) -> None:  # fmt: skip
        self._end(key)
        self._loops[key] = Progress(
            what,
            total=_total(batches),
            unit=unit,
            every=self.every,
            bar=False,  # Lightning draws its own bar on a terminal
            logger=log,
            enabled=trainer.is_global_zero,
            note=self._note if note else None,
        )

    def _step(self, key: str, batch_idx: int) -> None:
        progress = self._loops.get(key)
        if progress is not None:
            progress.goto(batch_idx + 1)

    def _end(self, key: str) -> None:
        progress = self._loops.pop(key, None)
        if progress is not None:
            progress.close()

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss = None
        what = f"epoch {trainer.current_epoch} train"
        self._start(trainer, "train", what, trainer.num_training_batches, "steps", note=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = _loss(outputs)
        if loss is not None:
            self._loss = loss.detach()  # never the step's graph; read only when a line is logged
        self._step("train", batch_idx)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("train")

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        train = self._loops.get("train")
        if train is not None and train.total is not None and train.count >= train.total:
            self._end("train")  # validation at the epoch's end: the training steps are done
        what = f"epoch {trainer.current_epoch} validation"
        self._start(trainer, "validation", what, trainer.num_val_batches, "batches")

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._step_over_loaders("validation", trainer.num_val_batches, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("validation")

    # ------------------------------------------------------------------ test
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, "test", "test", trainer.num_test_batches, "batches")

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._step_over_loaders("test", trainer.num_test_batches, batch_idx, dataloader_idx)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("test")

    def _step_over_loaders(self, key: str, batches: Any, batch_idx: int, loader: int) -> None:
        """Batches done over every dataloader of the loop (those before ``loader`` are done)."""
        before = 0.0
        if isinstance(batches, (list, tuple)):
            before = sum(float(b) for b in batches[:loader] if math.isfinite(float(b)))
        self._step(key, int(before) + batch_idx)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        for key in list(self._loops):
            self._end(key)
