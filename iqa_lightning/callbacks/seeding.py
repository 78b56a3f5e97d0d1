"""Per-epoch seeding, so that a resumed run repeats the epochs of an uninterrupted one.

A data module seeds its training shuffle once (``torch.Generator().manual_seed(seed)``) and the
generator then moves on with every epoch; flips and LoRA dropout draw from the global RNG. A run
resumed at epoch k would start those streams afresh and see other orders and flips than the run
that went through epochs 0..k-1. :class:`EpochSeed` makes every stream a function of (seed,
epoch) by re-seeding them at the start of each training epoch.

The shuffle gets a generator of its own: Lightning makes the first epoch's loader iterator before
``on_train_epoch_start`` (and the iterator draws the workers' base seed from the loader's
generator), while the permutation itself is drawn at the first batch, after the hook. Shuffle
order and the flips drawn in the main process are then exact after a resume; flips drawn in
worker processes (``dataset.num_workers`` > 0) follow the workers' own seeds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler


def train_loaders(loaders: Any) -> Iterator[DataLoader]:
    """Every ``DataLoader`` inside what ``trainer.train_dataloader`` holds (lists, dicts, task
    mixtures with a ``loaders`` mapping)."""
    if isinstance(loaders, DataLoader):
        yield loaders
    elif isinstance(loaders, dict):
        for loader in loaders.values():
            yield from train_loaders(loader)
    elif isinstance(loaders, (list, tuple)):
        for loader in loaders:
            yield from train_loaders(loader)
    elif isinstance(getattr(loaders, "loaders", None), dict):
        yield from train_loaders(loaders.loaders)


def epoch_seeds(seed: int, epoch: int, count: int) -> list[int]:
    """``count`` independent 32-bit seeds drawn from (seed, epoch)."""
    return [int(s) for s in np.random.SeedSequence([int(seed), int(epoch)]).generate_state(count)]


class EpochSeed(L.Callback):
    """Re-seed Python, NumPy and torch (CPU and CUDA) and every training loader's shuffle
    (``RandomSampler``) from (``seed``, epoch) at the start of each training epoch.

    Under DDP Lightning's ``DistributedSampler`` shuffles by ``seed + epoch`` already.

    Args:
        seed: The run's seed (``seed``); None turns the callback off.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = None if seed is None else int(seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seed is None:
            return
        loaders = list(train_loaders(trainer.train_dataloader))
        seeds = epoch_seeds(self.seed, trainer.current_epoch, 3 + len(loaders))
        random.seed(seeds[0])
        np.random.seed(seeds[1])
        torch.manual_seed(seeds[2])
        for loader, seed in zip(loaders, seeds[3:], strict=True):
            sampler = loader.sampler
            if isinstance(sampler, RandomSampler):
                if sampler.generator is None or sampler.generator is loader.generator:
                    sampler.generator = torch.Generator()
                sampler.generator.manual_seed(seed)
