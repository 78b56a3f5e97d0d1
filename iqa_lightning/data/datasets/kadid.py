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

``var`` (the variance of an image's ratings) gives ``ImageRecord.mos_std = sqrt(var)``, and
pyiqa's ``std`` column the std itself, so batches carry ``target_std``.
"""

from __future__ import annotations

import math
from pathlib import Path

from iqa_lightning.errors import AnnotationError

from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord, parse_line_number, read_annotation_csv
from ..spec import DatasetSpec

__all__ = ["KADIDDataModule"]

KADID_LABELS = "dmos.csv"
KADID_IMAGE_DIR = "images"


class KADIDDataModule(PyiqaLayoutDataModule):
    """KADID-10k data module.

    Args:
        root: Folder holding ``dmos.csv`` and ``images/``.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` arguments
            (layout, meta_file, split_column, ...) and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments (image_size, seed, ...).

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="kadid",
        title="KADID-10k",
        mos_range=(1.0, 5.0),
        higher_better=True,
        split="reference_disjoint",
        labels=(KADID_LABELS,),
        image_dirs=(KADID_IMAGE_DIR,),
        pyiqa_meta_names=("meta_info_KADID10kDataset.csv",),
        pyiqa_kind="fr",
    )

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        path = self.root / KADID_IMAGE_DIR / row.name
        std = None
        if "std" in row.values:
            std = parse_line_number(row.source, row.line, "std", row.values["std"])
        return ImageRecord(row.name, path, row.mos, row.ref_name, mos_std=std)

    def read_published(self) -> list[ImageRecord]:
        """Read ``dmos.csv``; image paths point into ``images/``."""
        labels = self.root / KADID_LABELS
        images = self.root / KADID_IMAGE_DIR
        self.require_published(
            self.spec.title,
            [labels, images],
            shown=[str(labels), f"{images}/"],
            present=Path.exists,
        )
        header, rows = read_annotation_csv(
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
                mos_std=_std(labels, row) if "var" in header else None,
            )
            for row in rows
        ]


def _std(labels: Path, row) -> float:
    """The rating std of a ``dmos.csv`` row: the square root of its ``var``."""
    var = parse_line_number(labels, row.line, "var", row["var"])
    if var < 0:
        raise AnnotationError(f"{labels}, line {row.line}, column 'var': {var} is negative")
    return math.sqrt(var)
