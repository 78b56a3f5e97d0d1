"""Training batches of image pairs, as DeQA-Score's pair dataset draws them
(``dataset.sampler=pairs``).

DeQA-Score (src/datasets/pair_dataset.py:78-113) walks its training list once per epoch, each
image A in turn, and pairs it with an image B drawn uniformly from A's own dataset (another
position of that dataset's list, which holds each image ``data_weights`` times). A batch of
``batch_size`` pairs is ``[A_1 .. A_n, B_1 .. B_n]``: ``2 n`` images; the collated batch says
``pairs = n`` so the loss knows where the halves meet (:class:`~iqa_lightning.models.losses.DeQAScoreLoss`).

The A's come from the loader's ordinary sampler (shuffled; under DDP Lightning puts a
distributed sampler there, so each process walks its own share), the B's from the sampler's own
seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, Sampler

from .images import collate_samples

__all__ = ["SAMPLERS", "PairBatchSampler", "collate_pairs"]

#: ``dataset.sampler``: ``shuffle`` (one image per position) or ``pairs`` (DeQA-Score's pairs).
SAMPLERS = ("shuffle", "pairs")


class PairBatchSampler(BatchSampler):
    """Batches ``[A_1 .. A_n, B_1 .. B_n]``: A's from ``sampler``, each B from A's group.

    Args:
        sampler: The A indices (e.g. a ``RandomSampler``).
        batch_size: Pairs per batch.
        drop_last: Drop a last batch of fewer than ``batch_size`` pairs.
        groups: The group (dataset name) of every index; None: one group.
        seed: Seed of the B draws.

    Raises:
        ValueError: A group of one image (nothing to pair it with).
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        groups: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.groups = None if groups is None else list(groups)
        self.seed = int(seed)
        members: dict[str, list[int]] = {}
        for index, group in enumerate(self.groups or [""] * len(sampler)):
            members.setdefault(group, []).append(index)
        small = sorted(g or "the dataset" for g, m in members.items() if len(m) < 2)
        if small:
            raise ValueError(
                f"dataset.sampler=pairs: {', '.join(small)} has fewer than 2 training images, "
                "so an image has no partner to be ranked against"
            )
        self.members = {g: torch.tensor(m) for g, m in members.items()}
        self.position = {}
        for group, indices in members.items():
            for position, index in enumerate(indices):
                self.position[index] = (group, position)
        self.generator = torch.Generator().manual_seed(self.seed)

    def partner(self, index: int) -> int:
        """A uniformly drawn other position of ``index``'s group (pair_dataset.py:98-103)."""
        group, position = self.position[int(index)]
        members = self.members[group]
        draw = int(torch.randint(len(members) - 1, (1,), generator=self.generator))
        return int(members[draw + (draw >= position)])

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            yield list(batch) + [self.partner(index) for index in batch]


def collate_pairs(samples: Sequence[dict]) -> dict:
    """:func:`~iqa_lightning.data.images.collate_samples` plus ``pairs`` (half the batch)."""
    if len(samples) % 2:
        raise ValueError(f"a pair batch holds an odd number of images ({len(samples)})")
    batch = collate_samples(list(samples))
    batch["pairs"] = len(samples) // 2
    return batch
