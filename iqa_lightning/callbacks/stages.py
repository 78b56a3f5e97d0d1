"""The stage schedule: which parameter groups train in which epochs.

A run is a list of phases (``stage.phases``), each training its own parameter groups with its
own optimiser, e.g. LoRA first, then a prompt on the frozen, tuned LMM (``stage=progressive``).
At a switch this callback:

1. writes the finished phase's trainable tensors to ``checkpoints/<phase>/trainable.safetensors``;
2. makes the next phase current (:meth:`IQAModule.set_phase` flips ``requires_grad``);
3. under DDP, wraps the module in a new ``DistributedDataParallel``, which broadcasts rank 0's
   parameters and registers the newly trainable ones for gradient all-reduce
   (:func:`~iqa_lightning.compat.rewrap_ddp`, the one place that touches Lightning's private
   API). Lightning's ``BaseFinetuning`` only adds parameter groups to the optimiser: parameters
   unfrozen after DDP wrapped the model never get their gradients synchronised, and ranks drift
   apart;
4. builds the new phase's optimiser and scheduler (the module's
   :class:`~iqa_lightning.phases.PhasePlan`, through ``configure_optimizers``);
5. resets checkpoint selection and early stopping, so each phase picks its own best epoch.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import FSDPStrategy

from iqa_lightning.compat import rewrap_ddp
from iqa_lightning.files import save_tensors
from iqa_lightning.run_folder import RunFolder

__all__ = ["StageSchedule", "save_tensors"]

log = logging.getLogger(__name__)


class StageSchedule(L.Callback):
    """Switch the module's phases at epoch boundaries (see module docstring).

    Args:
        output_dir: The run folder (phase tensors go under ``checkpoints/``).
    """

    def __init__(self, output_dir: str) -> None:
        self.checkpoint_dir = RunFolder(output_dir).checkpoints

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = pl_module.plan.index_for_epoch(trainer.current_epoch)
        if target != pl_module.phase_index:
            self.switch(trainer, pl_module, target)

    def switch(self, trainer: L.Trainer, pl_module: L.LightningModule, target: int) -> None:
        finished = pl_module.phase.name
        if isinstance(trainer.strategy, FSDPStrategy):
            raise RuntimeError(
                f"stage.phases: switching from {finished} to {pl_module.plan[target].name} "
                "is not supported under FSDP (its units are built for one phase's trainable "
                "parameters); run the stages as separate runs with stage.init_from"
            )
        if trainer.is_global_zero:
            save_tensors(
                pl_module.trainable_state_dict(),
                self.checkpoint_dir / finished / "trainable.safetensors",
            )
        pl_module.set_phase(target)
        rewrap_ddp(trainer.strategy)
        trainer.strategy.setup_optimizers(trainer)
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.best_k_models = {}
                callback.best_model_score = None
                callback.best_model_path = ""
                callback.kth_best_model_path = ""
            elif isinstance(callback, EarlyStopping):
                callback.wait_count = 0
                callback.best_score = callback.best_score.new_tensor(
                    float("inf") if callback.mode == "min" else float("-inf")
                )
        pl_module.best_val["val/srcc_best"] = float("-inf")
        log.info(
            "epoch %d: phase %s done, now %s training %s",
            trainer.current_epoch, finished, pl_module.phase.name, pl_module.trainable_groups,
        )  # fmt: skip
