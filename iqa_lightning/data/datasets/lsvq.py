"""LSVQ, the LIVE-FB Large-Scale Social Video Quality database (Ying, Mandal, Ghadiyaram,
Bovik, CVPR 2021), as published.

Layout (the videos of both sources under their batch folders, the two label files beside)::

    root/
      labels_train_test.csv     name, ..., mos, ..., is_test: the 28,056 training and 7,182
                                test videos (``is_test`` True / False)
      labels_test_1080p.csv     name, ..., mos, ...: the 3,573 videos of the 1080p test set
      <name>.mp4                e.g. ia-batch1/<id>.mp4, yfcc-batch1/<id>.mp4

``name`` is the video's path under ``root`` without its extension (``.mp4`` is added; a name
that already ends with a video extension is kept); it is the video's ``image_id``. ``mos`` is
on a 0-100 scale, higher is better.

Splits. ``official`` (the default) is the published one: train is ``is_test`` False, test the
test set that ``dataset.test_set`` names (``test``: ``is_test`` True; ``test_1080p``: the rows
of ``labels_test_1080p.csv``), and val is carved out of train with the seed and the val share
of ``dataset.split_ratios``. Other strategies split the rows of ``labels_train_test.csv`` (and
of ``labels_test_1080p.csv`` too with ``test_set=test_1080p``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

from iqa_lightning.errors import AnnotationError, SplitError

from ..records import ImageRecord, read_annotation_csv
from ..spec import DatasetSpec
from ..splits import SPLIT_NAMES
from ..video import VIDEO_SUFFIXES, VideoDataModule

__all__ = ["LSVQDataModule"]

logger = logging.getLogger("iqa_lightning.data")

LSVQ_TRAIN_TEST = "labels_train_test.csv"
LSVQ_TEST_1080P = "labels_test_1080p.csv"
LSVQ_TEST_SETS = ("test", "test_1080p")
LSVQ_NAME, LSVQ_MOS, LSVQ_IS_TEST = "name", "mos", "is_test"
_FLAGS = {"true": True, "1": True, "false": False, "0": False}


class LSVQDataModule(VideoDataModule):
    """LSVQ data module (videos).

    Args:
        root: Folder holding the two label files and the video folders.
        test_set: The published test set of the official split: ``"test"`` (``is_test`` rows
            of ``labels_train_test.csv``) or ``"test_1080p"`` (``labels_test_1080p.csv``).
        **kwargs: :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="lsvq",
        title="LSVQ",
        mos_range=(0.0, 100.0),
        higher_better=True,
        split="official",
        labels=(LSVQ_TRAIN_TEST, LSVQ_TEST_1080P),
        settings={"test_set": "test"},
    )
    test_set: str

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.test_set not in LSVQ_TEST_SETS:
            raise ValueError(
                f"dataset.test_set must be one of {list(LSVQ_TEST_SETS)}, got {self.test_set!r}"
            )

    def _labels(self, name: str) -> Path:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.name}: '{self.root}' is not an LSVQ folder; {path} does not exist"
            )
        return path

    def _read(self, path: Path, flagged: bool) -> list[ImageRecord]:
        required = (LSVQ_NAME, LSVQ_MOS, LSVQ_IS_TEST) if flagged else (LSVQ_NAME, LSVQ_MOS)
        _, rows = read_annotation_csv(path, required, numeric=(LSVQ_MOS,), unique=LSVQ_NAME)
        records = []
        for row in rows:
            name = row[LSVQ_NAME]
            if not name:
                raise AnnotationError(f"{path}, line {row.line}: empty '{LSVQ_NAME}'")
            if flagged:
                flag = _FLAGS.get(row[LSVQ_IS_TEST].lower())
                if flag is None:
                    raise AnnotationError(
                        f"{path}, line {row.line}, column '{LSVQ_IS_TEST}': "
                        f"{row[LSVQ_IS_TEST]!r} is not True / False"
                    )
                official = "test" if flag else "train"
            else:
                official = "test_1080p"
            file = name if name.lower().endswith(VIDEO_SUFFIXES) else f"{name}.mp4"
            records.append(ImageRecord(name, self.root / file, row.numbers[LSVQ_MOS],
                                       official_split=official))  # fmt: skip
        return records

    def read_records(self) -> list[ImageRecord]:
        """The rows of ``labels_train_test.csv``, with those of ``labels_test_1080p.csv`` for
        ``test_set=test_1080p`` (whose official split leaves the ``is_test`` rows out); each
        keeps its published part in ``official_split`` (``train``, ``test``, ``test_1080p``)."""
        records = self._read(self._labels(LSVQ_TRAIN_TEST), flagged=True)
        if self.test_set == "test_1080p":
            if self.split == "official":
                records = [r for r in records if r.official_split == "train"]
            extra = self._read(self._labels(LSVQ_TEST_1080P), flagged=False)
            seen = {r.image_id for r in records}
            twice = next((r.image_id for r in extra if r.image_id in seen), None)
            if twice is not None:
                raise AnnotationError(
                    f"{self.root / LSVQ_TEST_1080P}: video '{twice}' is also listed in "
                    f"{self.root / LSVQ_TRAIN_TEST}"
                )
            records += extra
        return records

    def assign(self, records: Sequence[ImageRecord]) -> dict[str, str]:
        """The published split for ``split=official`` (see the module docstring); the other
        strategies as :class:`~iqa_lightning.data.base.IQADataModule` assigns them."""
        if self.split != "official":
            return super().assign(records)
        assignment = {
            r.image_id: "train" if r.official_split == "train" else "test" for r in records
        }
        train = sorted(i for i, s in assignment.items() if s == "train")
        random.Random(self.seed).shuffle(train)
        train_ratio, val_ratio, _ = self.split_ratios
        share = val_ratio / (train_ratio + val_ratio) if train_ratio + val_ratio > 0 else 0.0
        n_val = min(max(1, round(share * len(train))), len(train) - 1) if share > 0 else 0
        for image_id in train[:n_val]:
            assignment[image_id] = "val"
        for name in SPLIT_NAMES:
            if name not in assignment.values():
                raise SplitError(
                    f"{self.name}: dataset.split=official (test_set={self.test_set}) leaves the "
                    f"'{name}' split empty; check {self.root / LSVQ_TRAIN_TEST} or raise the "
                    "val share of dataset.split_ratios"
                )
        logger.info(
            "%s: official split, test set %s; val is %d of the %d training videos (seed %d)",
            self.name, self.test_set, n_val, len(train), self.seed,
        )  # fmt: skip
        return assignment
