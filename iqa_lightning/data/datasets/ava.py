"""AVA: Aesthetic Visual Analysis (Murray, Marchesotti, Perronnin, CVPR 2012), as published.

Published layout::

    root/
      AVA.txt       one line per image, space-separated:
                    index, image id, 10 rating counts (ratings 1 .. 10), 2 semantic tag ids,
                    challenge id
      images/       <image id>.jpg

An image's MOS is the mean of its rating histogram, ``sum(r * count_r) / sum(count_r)`` for
ratings ``r = 1 .. 10`` (mos_range (1, 10), higher is better); its ``mos_std`` is the histogram's
standard deviation and, with ``dataset.target=histogram``, the ten counts are the target
histogram. AVA.txt holds no split: the default is a seeded random split.

pyiqa layout: ``meta_info_AVADataset.csv`` (``img_name, MOS, c1 .. c10, semantic_tag1,
semantic_tag2``, then pyiqa's two split columns, ``official split`` and ``ILGnet split``, coded
``0`` train / ``2`` test) beside an image folder (``images/`` or pyiqa's ``ava_images/``).
AVA's published test set (the generic test challenges' images, as pyiqa codes it) is
``dataset.split=pyiqa dataset.split_column="official split"``: its test part is the official
test set and ``val`` is carved out of its train part with the seed.
"""

from __future__ import annotations

import math
from pathlib import Path

from iqa_lightning.errors import AnnotationError

from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord, parse_line_number
from ..spec import DatasetSpec

__all__ = ["AVADataModule", "ava_mos"]

AVA_LABELS = "AVA.txt"
AVA_IMAGE_DIRS = ("images", "ava_images")
AVA_LEVELS = 10
#: Fields of an AVA.txt line: index, image id, 10 counts, 2 tags, challenge id.
AVA_FIELDS = 2 + AVA_LEVELS + 3
#: pyiqa's rating histogram columns, rating 1 first.
AVA_PYIQA_HISTOGRAM = tuple(f"c{i}" for i in range(1, AVA_LEVELS + 1))
#: pyiqa's codes in its split columns.
AVA_PYIQA_SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}


def ava_mos(counts: tuple[float, ...]) -> tuple[float, float]:
    """``(mean, std)`` of a rating histogram over ratings 1 .. len(counts).

    Raises:
        ValueError: No ratings or a negative count.
    """
    if any(c < 0 for c in counts):
        raise ValueError(f"negative rating count in {list(counts)}")
    total = sum(counts)
    if total <= 0:
        raise ValueError("no ratings")
    mean = sum(r * c for r, c in enumerate(counts, start=1)) / total
    var = sum(c * (r - mean) ** 2 for r, c in enumerate(counts, start=1)) / total
    return mean, math.sqrt(var)


class AVADataModule(PyiqaLayoutDataModule):
    """AVA data module (aesthetics).

    Args:
        root: Folder holding ``AVA.txt`` (or pyiqa's meta-info file) and the image folder.
        image_dir: ``"auto"`` (``images`` if present, else ``ava_images``) or a folder under
            ``root``.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="ava",
        title="AVA",
        mos_range=(1.0, 10.0),
        higher_better=True,
        split="random",
        labels=(AVA_LABELS,),
        image_dirs=AVA_IMAGE_DIRS,
        pyiqa_meta_names=("meta_info_AVADataset.csv",),
        pyiqa_kind="nr",
        settings={"image_dir": "auto"},
    )
    pyiqa_split_codes = AVA_PYIQA_SPLIT_CODES

    def resolve_image_dir(self) -> Path:
        """The image folder in use."""
        if self.image_dir != "auto":
            return self.configured_path(self.image_dir, "image folder", "dataset.image_dir")
        for candidate in AVA_IMAGE_DIRS:
            if (self.root / candidate).is_dir():
                return self.root / candidate
        looked = ", ".join(str(self.root / c) + "/" for c in AVA_IMAGE_DIRS)
        raise FileNotFoundError(f"{self.name}: no AVA image folder under '{self.root}'; "
                                f"looked for {looked}")  # fmt: skip

    def _record(self, image_id: str, counts: tuple[float, ...], where: str, images: Path):
        try:
            mos, std = ava_mos(counts)
        except ValueError as err:
            raise AnnotationError(f"{where}: {err}") from None
        lo, hi = self.mos_range
        return ImageRecord(
            image_id,
            images / image_id,
            mos,
            mos_std=std * (hi - lo) / (AVA_LEVELS - 1),
            rating_counts=counts if self.target == "histogram" else None,
        )

    def read_published(self) -> list[ImageRecord]:
        """Read ``AVA.txt``; the MOS of each line is the mean of its ten rating counts."""
        labels = self.root / AVA_LABELS
        images = self.resolve_image_dir()
        records, seen = [], set()
        with labels.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue
                where = f"{labels}, line {line_no}"
                if len(fields) != AVA_FIELDS:
                    raise AnnotationError(
                        f"{where}: expected {AVA_FIELDS} fields (index, image id, 10 rating "
                        f"counts, 2 tags, challenge id), got {len(fields)}"
                    )
                counts = tuple(
                    parse_line_number(labels, line_no, f"c{i}", fields[1 + i])
                    for i in range(1, AVA_LEVELS + 1)
                )
                image_id = f"{fields[1]}.jpg"
                if image_id in seen:
                    raise AnnotationError(f"{where}: image id {fields[1]} is listed twice")
                seen.add(image_id)
                records.append(self._record(image_id, counts, where, images))
        return records

    def read_pyiqa(self) -> list[ImageRecord]:
        self._images = self.resolve_image_dir()
        return super().read_pyiqa()

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        """A row of pyiqa's file; the MOS is recomputed from ``c1 .. c10`` when they are
        there (pyiqa rounds it to 3 significant digits), else read as given."""
        where = f"{row.source}, line {row.line}"
        if all(c in row.values for c in AVA_PYIQA_HISTOGRAM):
            counts = tuple(parse_line_number(row.source, row.line, c, row.values[c])
                           for c in AVA_PYIQA_HISTOGRAM)  # fmt: skip
            return self._record(row.name, counts, where, self._images)
        if self.target == "histogram":
            raise AnnotationError(f"{row.source}: dataset.target=histogram needs the columns "
                                  f"{list(AVA_PYIQA_HISTOGRAM)}")  # fmt: skip
        return ImageRecord(row.name, self._images / row.name, row.mos)
