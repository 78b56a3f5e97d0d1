"""KADID-10k (Lin, Hosu, Saupe, QoMEX 2019), as published.

Layout::

    root/
      dmos.csv      dist_img,ref_img,dmos,var   (one row per distorted image)
      images/       I01.png ... I81.png and I01_01_01.png ... I81_25_05.png

Despite its name, the ``dmos`` column is a mean opinion score on a 1-5 scale where higher is
better. Images made from one reference share its ``ref_img``, which becomes ``ref_id`` so the
default ``reference_disjoint`` split keeps each reference in one split.

pyiqa layout: ``meta_info_KADID10kDataset.csv`` (``ref_name,dist_name,dmos,std``) with
``images/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import AnnotationError, ImageRecord, read_annotation_csv

__all__ = ["KADIDDataModule"]

KADID_LABELS = "dmos.csv"
KADID_IMAGE_DIR = "images"


class KADIDDataModule(PyiqaLayoutDataModule):
    """KADID-10k data module.

    Args:
        root: Folder holding ``dmos.csv`` and ``images/``.
        mos_range: Score scale of the ``dmos`` column.
        higher_better: Whether a higher ``dmos`` means better quality.
        split: Split strategy; ``reference_disjoint`` by default.
        name: Dataset name for logs.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` arguments
            (layout, meta_file, split_column, ...) and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments (image_size, seed, ...).
    """

    pyiqa_meta_names = ("meta_info_KADID10kDataset.csv",)
    pyiqa_kind = "fr"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        mos_range: Sequence[float] = (1.0, 5.0),
        higher_better: bool = True,
        split: str = "reference_disjoint",
        name: str = "kadid",
        **kwargs,
    ):
        super().__init__(
            root=root,
            mos_range=mos_range,
            higher_better=higher_better,
            split=split,
            name=name,
            **kwargs,
        )

    def published_markers(self) -> list[Path]:
        return [self.root / KADID_LABELS]

    def published_folders(self) -> list[Path]:
        return [self.root / KADID_IMAGE_DIR]

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        path = self.root / KADID_IMAGE_DIR / row.name
        return ImageRecord(row.name, path, row.mos, row.ref_name)

    def read_published(self) -> list[ImageRecord]:
        """Read ``dmos.csv``; image paths point into ``images/``."""
        labels = self.root / KADID_LABELS
        images = self.root / KADID_IMAGE_DIR
        self.require_published(
            "KADID-10k", [labels, images], shown=[str(labels), f"{images}/"], present=Path.exists
        )
        _, rows = read_annotation_csv(
            labels,
            required=("dist_img", "ref_img", "dmos"),
            numeric=("dmos",),
            unique="dist_img",
        )
        for row in rows:
            if not row["ref_img"]:
                raise AnnotationError(
                    f"{labels}, line {row.line}, column 'ref_img': value is empty"
                )
        return [
            ImageRecord(
                image_id=row["dist_img"],
                path=images / row["dist_img"],
                mos_raw=row.numbers["dmos"],
                ref_id=row["ref_img"],
            )
            for row in rows
        ]
