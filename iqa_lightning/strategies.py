"""Distributed strategies whose validation and test see every image exactly once.

Under DDP Lightning gives each evaluation loader a ``DistributedSampler`` that pads the split
with repeats until it divides by the number of processes: repeated images enter SRCC / PLCC /
KRCC and multiple-choice accuracy. These strategies give evaluation loaders Lightning's
``UnrepeatedDistributedSampler`` instead (rank r takes images r, r + W, r + 2W, ...; ranks may
differ by one image), and keep the padded, shuffled sampler for training, where every rank must
run the same number of steps. Metric states are gathered across ranks when computed, so the
figures equal a single-process run's.

- :class:`DDPStrategy`: ``trainer=ddp`` (GPUs, NCCL) and ``trainer=ddp_sim`` (CPU processes, gloo).
- :class:`FSDPStrategy`: ``trainer=fsdp``; one FSDP unit per transformer block of the backbone
  and one per trainable subtree (prompt, prompter, LoRA matrices), so frozen and trainable
  parameters never share a unit (:func:`~iqa_lightning.models.backbones.blocks.fsdp_wrap_policy`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies import DDPStrategy as _DDPStrategy
from lightning.pytorch.strategies import FSDPStrategy as _FSDPStrategy
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DataLoader, DistributedSampler

from iqa_lightning.compat import update_dataloader
from iqa_lightning.models.backbones.blocks import block_classes, fsdp_wrap_policy


def unpadded_eval_loader(loader: Any, num_replicas: int, rank: int) -> Any:
    """``loader`` with its padded ``DistributedSampler`` replaced by an unpadded one.

    Raises:
        ValueError: The split has fewer images than processes (a rank would get none).
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(loader, DataLoader) or not isinstance(sampler, DistributedSampler):
        return loader
    if isinstance(sampler, UnrepeatedDistributedSampler):
        return loader
    dataset = sampler.dataset
    if len(dataset) < num_replicas:
        raise ValueError(
            f"an evaluation split has {len(dataset)} items for {num_replicas} processes "
            "(trainer.devices x trainer.num_nodes); every process needs at least one"
        )
    shards = UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank)
    return update_dataloader(loader, shards)


class _UnpaddedEval:
    """Strategy mixin: evaluation loaders shard without padding (see module docstring)."""

    def process_dataloader(self, dataloader: object) -> object:
        dataloader = super().process_dataloader(dataloader)
        trainer = self.lightning_module.trainer
        if trainer.state.stage == RunningStage.TRAINING or self.world_size < 2:
            return dataloader
        return unpadded_eval_loader(dataloader, self.world_size, self.global_rank)


class DDPStrategy(_UnpaddedEval, _DDPStrategy):
    """Lightning's DDP with unpadded evaluation (``trainer.strategy`` in ``trainer=ddp``)."""


class FSDPStrategy(_UnpaddedEval, _FSDPStrategy):
    """Lightning's FSDP with unpadded evaluation and the backbone's wrap policy.

    Without an explicit ``auto_wrap_policy`` the policy is made from the module being wrapped:
    every transformer block of its backbone, and every subtree whose parameters all train in the
    current phase. ``use_orig_params=True`` keeps parameter names and lets frozen and trainable
    tensors live side by side. A phase switch under FSDP is refused (run the stages as separate
    runs with ``stage.init_from``).
    """

    def _setup_model(self, model: Any) -> Any:
        if "auto_wrap_policy" not in self.kwargs:
            backbone = getattr(model, "backbone", model)
            self.kwargs["auto_wrap_policy"] = fsdp_wrap_policy(model, block_classes(backbone))
        return super()._setup_model(model)


@contextlib.contextmanager
def full_parameters(trainer: L.Trainer) -> Iterator[None]:
    """Inside the block every rank sees whole parameters, also under FSDP (where each rank
    holds a shard). Every rank must enter it."""
    if not isinstance(trainer.strategy, _FSDPStrategy) or trainer.strategy.model is None:
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False):
        yield
