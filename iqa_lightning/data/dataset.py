"""The torch side of an image quality dataset: labelled images -> samples -> batches.

Samples are dicts:
    ``pixels``   float32 [3, S, S] in [0, 1], resized to ``image_size``, not normalised
    ``target``   float32 [] quality in [0, 1], higher is better
    ``mos_raw``  float32 [] the score as the annotation file gives it
    ``image_id`` str
    ``target_std``  float32 [] (where the dataset gives rating stds) their std in target units
    ``target_hist`` float32 [L] (``dataset.target=histogram``) the rating histogram, worst first
    ``target_level`` int64 [] (``dataset.levels_from=answer``) the level word the file's answer
                 gives, 0 = excellent .. 4 = bad
    ``images``   float32 [3, H, W] in [0, 1] (``dataset.native_size``) the image at its own size,
                 flipped with ``pixels``; batches keep these as a list (:func:`collate_samples`)

:func:`make_loader` batches them (or any dict samples) with the package's loader settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .cache import ImageCache
from .images import array_to_tensor, collate_samples, flip_left_right, load_rgb, resize_to_array

__all__ = ["IQAImageDataset", "LabelledImage", "make_loader"]


@dataclass(frozen=True)
class LabelledImage:
    """What the dataset needs to produce one sample (``target_std``, ``histogram`` and
    ``level`` become the sample's ``target_std``, ``target_hist`` and ``target_level`` when
    set)."""

    image_id: str
    path: str
    mos_raw: float
    target: float
    target_std: float | None = None
    histogram: tuple[float, ...] | None = None
    level: int | None = None


class IQAImageDataset(Dataset):
    """Decodes, resizes and (optionally) flips labelled images.

    Args:
        items: Images with their labels.
        image_size: Output height and width.
        hflip: Flip each image horizontally with probability 0.5 (after the cache).
        cache: Preprocessing cache of ``image_size`` images; ``None`` decodes every time.
        resize: ``squash`` or ``short_side_crop`` (see :data:`~iqa_lightning.data.images.RESIZES`);
            the cache, when given, carries its own.
        native_size: Samples also carry ``images``: the decoded image at its own size (decoded
            each time, never cached), for a backbone that reads native resolution.
    """

    def __init__(
        self,
        items: Sequence[LabelledImage],
        image_size: int,
        hflip: bool = False,
        cache: ImageCache | None = None,
        resize: str = "squash",
        native_size: bool = False,
    ):
        self.items = list(items)
        self.resize = resize
        self.image_size = image_size
        self.hflip = hflip
        self.cache = cache
        self.native_size = native_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        image = load_rgb(item.path) if self.cache is None or self.native_size else None
        if self.cache is not None:
            array = self.cache.load_array(item.path)
        else:
            array = resize_to_array(image, self.image_size, resize=self.resize)
        native = np.array(image, dtype=np.uint8) if self.native_size else None
        if self.hflip and torch.rand(()) < 0.5:
            array = flip_left_right(array)
            native = None if native is None else flip_left_right(native)
        sample = {
            "pixels": array_to_tensor(array),
            "target": torch.tensor(item.target, dtype=torch.float32),
            "mos_raw": torch.tensor(item.mos_raw, dtype=torch.float32),
            "image_id": item.image_id,
        }
        if item.target_std is not None:
            sample["target_std"] = torch.tensor(item.target_std, dtype=torch.float32)
        if item.histogram is not None:
            sample["target_hist"] = torch.tensor(item.histogram, dtype=torch.float32)
        if item.level is not None:
            sample["target_level"] = torch.tensor(item.level, dtype=torch.long)
        if self.native_size:
            sample["images"] = array_to_tensor(native)
        return sample


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    collate_fn: Callable[[list], dict] = collate_samples,
    **options,
) -> DataLoader:
    """A DataLoader with the package's settings: persistent workers when there are any,
    pinned memory where CUDA is available.

    Args:
        dataset: The samples.
        batch_size: Samples per batch.
        num_workers: Worker processes (0: load in the main process).
        collate_fn: Batches samples; :func:`~iqa_lightning.data.images.collate_samples` by
            default.
        **options: Other DataLoader arguments (``shuffle``, ``generator``, ``sampler``, ...).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        **options,
    )
