"""The shared data module: records -> checks -> labels -> splits -> dataloaders.

A dataset subclass declares its facts in a class-level :class:`~.spec.DatasetSpec` (``spec``)
and implements :meth:`IQADataModule.read_records`. Everything else (file
checks, skipping bad images, label normalisation, splitting, batching) is common.

Batches are dicts:
    ``pixels``   float32 [B, 3, S, S] in [0, 1], resized to ``image_size``, not normalised
    ``target``   float32 [B] quality in [0, 1], higher is better
    ``mos_raw``  float32 [B] the score as the annotation file gives it
    ``image_id`` list[str]
    ``target_std``  float32 [B] rating std in target units (``mos_std / (hi - lo)``), where
                    every image of the dataset has one
    ``target_hist`` float32 [B, L] rating histogram, worst level first, with
                    ``target=histogram``
    ``images``   list of B float32 [3, H, W] in [0, 1], each image at its own size, with
                 ``native_size`` (Qwen2-VL's native resolution)

The torch dataset of one split and the loader settings live in :mod:`.dataset`.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler

from iqa_lightning.errors import AnnotationError, SplitError

from ..machine import resolve_workers
from .arguments import (
    check_mos,
    check_mos_range,
    check_split_keys,
    check_split_name,
    check_unique_ids,
    integer,
    positive_int,
)
from .cache import make_image_cache
from .checks import CHECK_LEVELS, check_cache_file, check_workers, find_bad_images
from .dataset import IQAImageDataset, LabelledImage, make_loader
from .images import check_resize
from .pairs import SAMPLERS, PairBatchSampler, collate_pairs
from .records import ImageRecord, write_csv
from .spec import DatasetSpec
from .split_files import DEFAULT_SPLIT_COLUMN, resolve_split_file, split_from_file
from .splits import SPLIT_NAMES, SPLIT_STRATEGIES, assign_splits, check_ratios

__all__ = ["TARGETS", "IQADataModule", "IQAImageDataset", "LabelledImage", "check_histograms"]

#: ``dataset.target``: what batches carry besides the score.
TARGETS = ("mos", "histogram")

logger = logging.getLogger("iqa_lightning.data")


class IQADataModule(L.LightningDataModule, ABC):
    """Base data module for image quality datasets.

    Args:
        root: Dataset folder (config key ``dataset.root``).
        image_size: Side of the square images fed to the model.
        mos_range: (lo, hi) of the score scale in the annotation file; None: ``spec.mos_range``.
        higher_better: False for DMOS-like scores; targets are then flipped. None:
            ``spec.higher_better``.
        split: Split strategy: official, reference_disjoint, random, per_image_leaky, pyiqa or
            column (see :mod:`.splits`); None: ``spec.split``.
        split_ratios: (train, val, test) fractions for the seeded strategies.
        seed: Seed for the split and the training shuffle.
        batch_size: Training batch size.
        eval_batch_size: Validation / test batch size; defaults to ``batch_size``.
        num_workers: DataLoader worker processes.
        hflip: Random horizontal flip of training images.
        on_bad_image: ``"error"`` stops on a missing image in :meth:`setup` (on an
            undecodable one when it is loaded, or in :meth:`setup` with ``check_images``);
            ``"skip"`` checks every image once in :meth:`setup`, drops bad ones and lists them.
        name: Short dataset name used in logs and run folders; None: ``spec.name``.
        cache: Resize each image once, store it (uint8) and reuse it (:mod:`.cache`).
        cache_dir: Folder of that cache; ``None``: :func:`.cache.default_cache_dir`. The
            image check keeps its verdicts in ``<cache_dir>/image_checks/`` (none are kept
            when ``cache_dir`` is None).
        check_images: ``"off"``, ``"header"`` or ``"full"``: check every image in
            :meth:`setup`, in parallel, before anything trains (see :mod:`.checks`); with
            ``on_bad_image="error"`` every bad file is listed in one
            :class:`~.checks.ImageCheckError`.
        resize: How an image becomes ``image_size`` square: ``"squash"`` (both sides) or
            ``"short_side_crop"`` (short side, then the centre square; :data:`.images.RESIZES`).
        split_file: With ``split="column"``: a label file with a split column (CSV or
            ``.xlsx``), e.g. ``split_kadid10k.csv``; a path, or a name in ``root``.
            (:class:`~.pyiqa.PyiqaLayoutDataModule` also takes a pyiqa split pickle here for
            ``split="pyiqa"``.)
        split_column: With ``split="column"``: the split column of ``split_file``
            (default ``split``). (With ``split="pyiqa"``: a split column of pyiqa's file.)
        split_image_column: With ``split="column"``: the column of ``split_file`` holding the
            image names; None: the column that matches the most image names.
        target: ``"mos"``: batches carry the score (and its rating std where the dataset has
            one); ``"histogram"``: they also carry each image's rating histogram
            (``target_hist``), which ``module.loss=soft_label`` then trains towards.
        sampler: ``"shuffle"`` (training batches of ``batch_size`` shuffled images) or
            ``"pairs"`` (batches of ``batch_size`` pairs, each image with a partner drawn from
            its own dataset, as DeQA-Score's pair dataset: :mod:`~iqa_lightning.data.pairs`).
        native_size: Batches also carry ``images``, a list of the decoded images at their own
            sizes (decoded each step, not cached), beside the ``pixels`` square: what a
            Qwen2-VL family backbone at its native resolution reads
            (:mod:`~iqa_lightning.models.native_resolution`).
    """

    #: The dataset's facts; ``name``, ``mos_range``, ``higher_better`` and ``split`` left at
    #: None take their value from it.
    spec: ClassVar[DatasetSpec] = DatasetSpec(name="iqa")

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        image_size: int = 224,
        mos_range: Sequence[float] | None = None,
        higher_better: bool | None = None,
        split: str | None = None,
        split_ratios: Sequence[float] = (0.7, 0.1, 0.2),
        seed: int = 0,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        hflip: bool = True,
        on_bad_image: str = "error",
        name: str | None = None,
        cache: bool = False,
        cache_dir: str | os.PathLike | None = None,
        split_file: str | os.PathLike | None = None,
        split_column: str | None = None,
        split_image_column: str | None = None,
        check_images: str = "off",
        resize: str = "squash",
        target: str = "mos",
        sampler: str = "shuffle",
        native_size: bool = False,
    ):
        super().__init__()
        spec = self.spec
        mos_range = spec.mos_range if mos_range is None else mos_range
        higher_better = spec.higher_better if higher_better is None else higher_better
        split = spec.split if split is None else split
        name = spec.name if name is None else name
        self.root = None if root is None else Path(os.path.expanduser(str(root)))
        self.image_size = positive_int(image_size, "image_size")
        self.mos_range = check_mos_range(mos_range)
        self.higher_better = bool(higher_better)
        if split not in SPLIT_STRATEGIES:
            raise ValueError(
                f"dataset.split must be one of {list(SPLIT_STRATEGIES)}, got {split!r}"
            )
        self.split = split
        check_split_keys(split, split_file, split_column, split_image_column)
        self.split_file = split_file
        self.split_column = split_column
        self.split_image_column = split_image_column
        self.split_ratios = check_ratios(split_ratios)
        self.seed = integer(seed, "seed", minimum=None)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else positive_int(eval_batch_size, "eval_batch_size")
        )
        self.num_workers = resolve_workers(num_workers, "dataset.num_workers")
        self.hflip = bool(hflip)
        if on_bad_image not in ("error", "skip"):
            raise ValueError(
                f"dataset.on_bad_image must be 'error' or 'skip', got {on_bad_image!r}"
            )
        self.on_bad_image = on_bad_image
        if check_images is False:  # an unquoted YAML ``off``
            check_images = "off"
        if check_images not in CHECK_LEVELS:
            raise ValueError(
                f"dataset.check_images must be one of {list(CHECK_LEVELS)}, got {check_images!r}"
            )
        self.check_images = check_images
        self.name = str(name)
        if target not in TARGETS:
            raise ValueError(f"dataset.target must be one of {list(TARGETS)}, got {target!r}")
        self.target = target
        if sampler not in SAMPLERS:
            raise ValueError(f"dataset.sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
        self.sampler = sampler
        if not isinstance(native_size, bool):
            raise ValueError(f"dataset.native_size must be true or false, got {native_size!r}")
        self.native_size = native_size
        self.resize = check_resize(resize)
        self.cache = make_image_cache(cache, cache_dir, self.image_size, self.resize)
        self.cache_dir = None if cache_dir is None else Path(os.path.expanduser(str(cache_dir)))
        self._records: list[ImageRecord] | None = None
        self._assignment: dict[str, str] = {}
        self._skipped: list[tuple[str, str, str]] = []

    @abstractmethod
    def read_records(self) -> list[ImageRecord]:
        """Read the dataset's annotation files into records (no image decoding)."""

    def prepare_records(self) -> dict[str, int]:
        """Read, check and split the records now, before a model is built (idempotent).

        Runs :meth:`prepare_data` and ``setup("fit")``: the root and label files are checked,
        every row is parsed, the split is built and, with ``check_images``, every image is
        checked. A wrong ``dataset.root`` or a bad cell surfaces here, not at the first batch.

        Returns:
            Images per split.

        Raises:
            FileNotFoundError: The root, a label / split file or image files are missing.
            AnnotationError: A label file is malformed or a score is outside ``mos_range``.
            SplitError: The split cannot be built as configured.
            ImageLoadError: ``check_images`` found images that cannot be used
                (:class:`~.checks.ImageCheckError`, listing every file).
        """
        self.prepare_data()
        self.setup("fit")
        return self.num_records

    def setup(self, stage: str | None = None) -> None:
        """Read records, check images and labels, and assign splits (idempotent)."""
        if self._records is not None:
            return
        self.check_root()
        records = list(self.read_records())
        if not records:
            raise AnnotationError(
                f"{self.name}: the annotation files under '{self.root}' list no images"
            )
        check_unique_ids(records)
        check_mos(records, self.mos_range, self.name)
        assignment = self.assign(records)
        skipped = self.find_bad_images(records)
        bad = {image_id for image_id, _, _ in skipped}
        kept = [r for r in records if r.image_id not in bad]
        for name in SPLIT_NAMES:
            if not any(assignment[r.image_id] == name for r in kept):
                raise SplitError(
                    f"{self.name}: after skipping {len(skipped)} bad image(s) the '{name}' split "
                    "is empty; fix or restore the listed files"
                )
        if self.target == "histogram":
            check_histograms(kept, self.name)
        self._skipped = skipped
        self._assignment = {r.image_id: assignment[r.image_id] for r in kept}
        self._records = kept
        counts = self.num_records
        logger.info(
            "%s: %d images (train %d, val %d, test %d), split=%s, seed=%d",
            self.name,
            len(kept),
            counts["train"],
            counts["val"],
            counts["test"],
            self.split,
            self.seed,
        )

    def assign(self, records: Sequence[ImageRecord]) -> dict[str, str]:
        """Each record's split (``image_id`` to train / val / test) by ``split``."""
        if self.split == "column":
            path = resolve_split_file(self.split_file, self.root)
            column = self.split_column or DEFAULT_SPLIT_COLUMN
            return split_from_file(records, path, column, self.split_image_column, self.name)
        return assign_splits(records, self.split, self.split_ratios, self.seed)

    def find_bad_images(self, records: Sequence[ImageRecord]) -> list[tuple[str, str, str]]:
        """``(image_id, path, reason)`` of the images to skip, checked as ``on_bad_image`` and
        ``check_images`` say (:func:`~.checks.find_bad_images`); raises in ``error`` mode."""
        level = self.check_images if self.check_images != "off" else "full"
        cache_file = None
        if self.cache_dir is not None:
            cache_file = check_cache_file(self.cache_dir, self.name, self.root, level)
        return find_bad_images(
            records,
            self.on_bad_image,
            self.check_images,
            cache_file,
            check_workers(self.num_workers),
            self.name,
        )

    def check_root(self) -> None:
        """Raise a clear error when the dataset folder is not set or does not exist."""
        if self.root is None:
            raise FileNotFoundError(f"{self.name}: dataset.root is not set")
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise FileNotFoundError(
                f"{self.name}: dataset root '{self.root}' {what}; set dataset.root "
                "(or paths.data_dir) to the folder that holds the dataset"
            )

    def to_target(self, mos: float) -> float:
        """Map a raw score to the [0, 1], higher-is-better target."""
        lo, hi = self.mos_range
        value = min(max((mos - lo) / (hi - lo), 0.0), 1.0)
        return value if self.higher_better else 1.0 - value

    def target_bounds(self) -> tuple[float, float]:
        """The lowest and highest target over every image of the dataset (all splits): the
        range Q-Align and DeQA-Score cut into levels (``module.levels.range=observed``)."""
        targets = [self.to_target(r.mos_raw) for r in self._require_setup()]
        return min(targets), max(targets)

    def has_std(self) -> bool:
        """Whether every image has a rating std (batches then carry ``target_std``)."""
        return all(r.mos_std is not None for r in self._require_setup())

    def records(self, split: str | None = None) -> list[ImageRecord]:
        """Records in file order, optionally only those of one split."""
        kept = self._require_setup()
        if split is None:
            return list(kept)
        check_split_name(split)
        return [r for r in kept if self._assignment[r.image_id] == split]

    @property
    def num_records(self) -> dict[str, int]:
        """Number of images per split (after skipping), for logging."""
        kept = self._require_setup()
        counts = dict.fromkeys(SPLIT_NAMES, 0)
        for record in kept:
            counts[self._assignment[record.image_id]] += 1
        return counts

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every image dropped in ``on_bad_image="skip"`` mode."""
        return [(path, reason) for _, path, reason in self._skipped]

    def split_table(self) -> list[tuple[str, str]]:
        """(image_id, split) for every image used, in file order."""
        return [(r.image_id, self._assignment[r.image_id]) for r in self._require_setup()]

    def write_split(self, path: str | os.PathLike) -> Path:
        """Write ``split.csv`` (header ``image_id,split``); a folder gets ``split.csv`` inside."""
        return write_csv(path, "split.csv", ("image_id", "split"), self.split_table())

    def write_skipped(self, path: str | os.PathLike) -> Path:
        """Write the skipped images (header ``image_id,path,reason``); a folder gets
        ``skipped.csv`` inside."""
        self._require_setup()
        return write_csv(path, "skipped.csv", ("image_id", "path", "reason"), self._skipped)

    def dataset(self, split: str) -> IQAImageDataset:
        """The torch dataset of one split, or of every image for ``"all"`` (flips only in train)."""
        if split != "all":
            check_split_name(split)
        lo, hi = self.mos_range
        with_std, with_hist = self.has_std(), self.target == "histogram"
        items = [
            LabelledImage(
                r.image_id,
                str(r.path),
                float(r.mos_raw),
                self.to_target(r.mos_raw),
                target_std=float(r.mos_std) / (hi - lo) if with_std else None,
                histogram=tuple(r.rating_counts) if with_hist else None,
                level=r.level,
            )
            for r in self.records(None if split == "all" else split)
        ]
        hflip = self.hflip and split == "train"
        return IQAImageDataset(
            items, self.image_size, hflip=hflip, cache=self.cache, resize=self.resize,
            native_size=self.native_size,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        if self.sampler == "pairs":
            dataset = self.dataset("train")
            batches = PairBatchSampler(
                RandomSampler(dataset, generator=generator), self.batch_size,
                groups=getattr(dataset, "sources", None), seed=self.seed,
            )  # fmt: skip
            return make_loader(dataset, 1, self.num_workers, collate_pairs, batch_sampler=batches)
        return self._loader("train", self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def eval_dataloader(self, split: str = "test") -> DataLoader:
        """An ordered, unflipped loader over one split or ``"all"`` images (cross-dataset eval)."""
        return self._loader(split, self.eval_batch_size, shuffle=False)

    def _loader(self, split, batch_size, shuffle, generator=None) -> DataLoader:
        return make_loader(
            self.dataset(split),
            batch_size,
            self.num_workers,
            shuffle=shuffle,
            drop_last=False,
            generator=generator,
        )

    def _require_setup(self) -> list[ImageRecord]:
        if self._records is None:
            raise RuntimeError(f"{self.name}: call setup() before using the data module")
        return self._records


def check_histograms(records: Sequence[ImageRecord], name: str) -> None:
    """Raise unless every record has a rating histogram of the same length, none negative or
    empty (``dataset.target=histogram``).

    Raises:
        AnnotationError: Naming the dataset and the first image at fault.
    """
    sizes = set()
    for record in records:
        counts = record.rating_counts
        if counts is None:
            raise AnnotationError(
                f"{name}: dataset.target=histogram needs each image's rating histogram, but "
                f"'{record.image_id}' has none; only KonIQ-10k's label files (columns c1..c5) "
                "give one here; use dataset.target=mos"
            )
        if any(c < 0 for c in counts) or sum(counts) <= 0:
            raise AnnotationError(
                f"{name}: the rating histogram of '{record.image_id}' ({list(counts)}) has a "
                "negative count or no ratings"
            )
        sizes.add(len(counts))
    if len(sizes) > 1:
        raise AnnotationError(f"{name}: rating histograms of different lengths {sorted(sizes)}")
