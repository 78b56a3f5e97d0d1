"""The LightningModule: a frozen LMM, the parts being tuned, the loss and the metrics.

Data flow of one step (see DESIGN.md)::

    pixels [B,3,R,R] in [0,1] -> prompt -> backbone (normalise, vision, LM) -> next-token logits
    -> WordScore (fp32 log-softmax over quality words) -> score [B] -> MSE vs target [B]

Trainable parameters are an explicit contract: each part names its parameter group
(:meth:`IQAModule.parameter_groups`); the optimiser, the checkpoints and the frozen-stays-frozen
tests are all built from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from iqa_lightning.metrics import correlation_metrics
from iqa_lightning.models.score import WordScore

log = logging.getLogger(__name__)

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}


class IQAModule(L.LightningModule):
    """Train prompts (and later LoRA / prompters) on a frozen LMM to predict image quality.

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone` (frozen).
        prompt: A pixel prompt or :class:`~iqa_lightning.models.prompts.NoPrompt`.
        score: The :class:`~iqa_lightning.models.score.WordScore` head.
        optimizer: ``params -> torch.optim.Optimizer`` (Hydra ``_partial_``).
        scheduler: ``optimizer -> LRScheduler`` or None.
        trainable: Names of the parameter groups that train (``stage.trainable``).
        loss: ``mse``, ``l1`` or ``smooth_l1`` between score and target.
        scheduler_interval: ``epoch`` or ``step``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        prompt: nn.Module,
        score: WordScore,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        trainable: Sequence[str] = ("prompt",),
        loss: str = "mse",
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"module.loss={loss!r} must be one of {sorted(LOSSES)}")
        self.save_hyperparameters(ignore=["backbone", "prompt", "score", "optimizer", "scheduler"])
        self.backbone = backbone
        self.prompt = prompt
        self.score = score.bind(backbone)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.loss_fn = LOSSES[loss]
        self.register_buffer(
            "input_ids", backbone.encode_prompt(score.question, score.answer_prefix), False
        )
        self.val_metrics = correlation_metrics("val/")
        self.test_metrics = correlation_metrics("test/")
        self.best_val = {"val/srcc_best": float("-inf")}
        self.test_rows: list[dict[str, Any]] = []
        # Checkpoints hold the trainable parameters only; loading them leaves the rest as built.
        self.strict_loading = False
        self.set_trainable(trainable)

    # ------------------------------------------------------------ parameter groups
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Every tunable part's parameters by group name, each as ``{full name: parameter}``."""
        groups = {"prompt": {f"prompt.{n}": p for n, p in self.prompt.named_parameters()}}
        return {name: params for name, params in groups.items() if params}

    def set_trainable(self, names: Sequence[str]) -> None:
        """Train exactly the named groups; everything else, the backbone included, is frozen."""
        groups = self.parameter_groups()
        unknown = [n for n in names if n not in groups]
        if unknown:
            raise ValueError(
                f"stage.trainable names {unknown}, but this model's parameter groups are "
                f"{sorted(groups)} (a prompt=none model has no 'prompt' group)"
            )
        self.requires_grad_(False)
        for name in names:
            for param in groups[name].values():
                param.requires_grad_(True)
        self.trainable_groups = list(names)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by full name, detached on CPU (what checkpoints hold)."""
        groups = self.parameter_groups()
        return {
            name: param.detach().cpu().contiguous()
            for group in self.trainable_groups
            for name, param in groups[group].items()
        }

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load trainable tensors by full name (from ``trainable.safetensors``).

        Raises:
            KeyError: A trainable tensor is missing, or a name matches no parameter.
        """
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(tensors))
        unknown = sorted(set(tensors) - set(dict(self.named_parameters())))
        if missing or unknown:
            raise KeyError(f"trainable tensors: missing {missing}, unknown {unknown}")
        self.load_state_dict(tensors, strict=False)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- forward
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Quality scores ``[B]`` (fp32) for ``[B, 3, R, R]`` pixels in [0, 1]."""
        logits = self.backbone.next_token_logits(self.prompt(pixels), self.input_ids)
        return self.score(logits)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        scores = self(batch["pixels"])
        loss = self.loss_fn(scores, batch["target"].float())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(scores))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        scores = self(batch["pixels"])
        self.val_metrics.update(scores, batch["target"].float())
        loss = self.loss_fn(scores, batch["target"].float())
        self.log("val/loss", loss, batch_size=len(scores), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        values["val/srcc_plcc"] = (values["val/srcc"] + values["val/plcc"]) / 2
        if not self.trainer.sanity_checking:
            srcc = float(values["val/srcc"])
            if srcc == srcc:  # not NaN
                self.best_val["val/srcc_best"] = max(self.best_val["val/srcc_best"], srcc)
            values["val/srcc_best"] = torch.tensor(self.best_val["val/srcc_best"])
        self.log_dict(values, prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        scores = self(batch["pixels"])
        target = batch["target"].float()
        self.test_metrics.update(scores, target)
        for image_id, mos, tgt, score in zip(
            batch["image_id"],
            batch["mos_raw"].tolist(),
            target.tolist(),
            scores.tolist(),
            strict=True,
        ):
            self.test_rows.append(
                {"image_id": image_id, "mos_raw": mos, "target": tgt, "score": score}
            )

    def on_test_epoch_start(self) -> None:
        self.test_rows = []

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log_dict(values)

    # -------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        groups = self.parameter_groups()
        params = [p for g in self.trainable_groups for p in groups[g].values()]
        if not params:
            raise ValueError("nothing to train: stage.trainable is empty")
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trainable tensors: a checkpoint never holds a frozen backbone weight."""
        keep = set(self.trainable_state_dict())
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["best_val"] = dict(self.best_val)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        expected = set(self.trainable_state_dict())
        missing = expected - set(checkpoint["state_dict"])
        if missing:
            raise KeyError(
                f"checkpoint lacks trainable tensors {sorted(missing)}; was it written by a run "
                "with the same prompt and stage?"
            )
        self.best_val.update(checkpoint.get("best_val", {}))
