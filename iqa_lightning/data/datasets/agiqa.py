"""AGIQA-3K (Li et al., IEEE TCSVT 2023), as published.

Layout::

    root/
      data.csv    name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align
      <images>/   2,982 generated images, e.g. AttnGAN_normal_000.jpg, sd1.5_normal_000.jpg

``data.csv`` comes from github.com/lcysyzxdxc/AGIQA-3k-Database. ``mos_quality`` (perceptual
quality) and ``mos_align`` (text-image alignment) lie on a 0-5 scale (values below 1 occur),
higher is better. The images are distributed as an archive whose folder name differs between
copies, so ``image_dir="auto"`` looks for the first image of ``data.csv`` in the usual folders
(:data:`AGIQA_IMAGE_DIRS`, including ``root`` itself). The dataset publishes no split; the
default is a seeded random split.

pyiqa layout: pyiqa itself ships no AGIQA-3K file; the name looked for,
``meta_info_AGIQA-3K.csv`` (with a split pickle ``AGIQA-3K.pkl``), is that of a public pyiqa
fork. It is read by position (``name, mos, ...``); other names work through ``meta_file``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord, read_annotation_csv
from ..spec import DatasetSpec

__all__ = ["AGIQA3KDataModule"]

AGIQA_LABELS = "data.csv"
AGIQA_IMAGE_DIRS = ("images", "Images", "image", "AGIQA-3K", "AGIQA-3k", "database", ".")
_PROBES = 10


class AGIQA3KDataModule(PyiqaLayoutDataModule):
    """AGIQA-3K data module.

    Args:
        root: Folder holding ``data.csv`` and the images.
        image_dir: ``"auto"`` or a folder name under ``root`` (``"."`` for ``root`` itself).
        labels_file: Label file name under ``root``.
        score_column: ``mos_quality`` (perceptual quality) or ``mos_align`` (alignment).
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="agiqa3k",
        title="AGIQA-3K",
        mos_range=(0.0, 5.0),
        higher_better=True,
        split="random",
        labels=(AGIQA_LABELS,),
        pyiqa_meta_names=("meta_info_AGIQA-3K.csv",),
        pyiqa_kind="nr",
        settings={"image_dir": "auto", "labels_file": AGIQA_LABELS, "score_column": "mos_quality"},
    )
    #: The image folder in use, once the pyiqa layout has been read.
    _images: Path | None = None

    def published_markers(self) -> list[Path]:
        return [self.root / self.labels_file]

    def published_requested(self) -> bool:
        return self.labels_file != AGIQA_LABELS

    def read_pyiqa(self) -> list[ImageRecord]:
        """The meta-info file, read by position (name, mos); images as for ``data.csv``."""
        path = self.meta_path()
        with path.open(encoding="utf-8-sig", newline="") as handle:
            probes = [cells[0] for cells in islice(csv.reader(handle), 1, _PROBES + 1) if cells]
        self._images = self.resolve_image_dir(probes or ["?"])
        return super().read_pyiqa()

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        return ImageRecord(row.name, self._images / row.name, row.mos)

    def read_published(self) -> list[ImageRecord]:
        """Read ``data.csv``; image paths point into the resolved image folder."""
        labels = self.root / self.labels_file
        if not labels.is_file():
            raise FileNotFoundError(
                f"{self.name}: '{self.root}' is not an AGIQA-3K folder; looked for {labels}"
            )
        _, rows = read_annotation_csv(
            labels,
            required=("name", self.score_column),
            numeric=(self.score_column,),
            unique="name",
        )
        images = self.resolve_image_dir([row["name"] for row in rows[:_PROBES]])
        return [
            ImageRecord(
                image_id=row["name"],
                path=images / row["name"],
                mos_raw=row.numbers[self.score_column],
            )
            for row in rows
        ]

    def resolve_image_dir(self, probes: Sequence[str]) -> Path:
        """The image folder: the configured one, or the first usual folder holding any of
        the ``probes`` (the first image names of the label file)."""
        if self.image_dir != "auto":
            setting = f"dataset.image_dir={self.image_dir}"
            return self.configured_path(self.image_dir, "image folder", setting)
        for candidate in AGIQA_IMAGE_DIRS:
            folder = self.root / candidate
            if any((folder / probe).is_file() for probe in probes):
                return folder
        looked = ", ".join(str(self.root / c / probes[0]) for c in AGIQA_IMAGE_DIRS)
        raise FileNotFoundError(
            f"{self.name}: cannot find the AGIQA-3K images listed in "
            f"{self.root / self.labels_file}; looked for them at: {looked}. Set "
            "dataset.image_dir to the image folder name"
        )
