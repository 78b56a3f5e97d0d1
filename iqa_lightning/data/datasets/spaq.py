"""SPAQ: smartphone photography quality (Fang et al., CVPR 2020), as published.

Published layout::

    root/
      Annotations/MOS and Image attribute scores.xlsx
          Image name, MOS, Brightness, Colorfulness, Contrast, Noisiness, Sharpness
      Annotations/Scene category labels.xlsx, Annotations/EXIF_tags.xlsx   (not read)
      TestImage/     00001.jpg ... 11125.jpg

``MOS`` and the five attribute scores lie in [0, 100], higher is better; ``score_column``
selects one of them. A CSV export of the spreadsheet (same name, ``.csv``) is read when the
``.xlsx`` is absent. The dataset has no official split; the default is a seeded random split.

pyiqa layout: ``meta_info_SPAQDataset.csv`` (``Image name,MOS,...`` then scene and EXIF
columns) with ``TestImage/``.
"""

from __future__ import annotations

from iqa_lightning.errors import AnnotationError

from ..formats import read_table
from ..pyiqa import LabelTableDataModule, MetaRow
from ..records import ImageRecord
from ..spec import DatasetSpec

__all__ = ["SPAQDataModule"]

SPAQ_LABELS = (
    "Annotations/MOS and Image attribute scores.xlsx",
    "Annotations/MOS and Image attribute scores.csv",
)
SPAQ_IMAGE_DIR = "TestImage"
SPAQ_NAME_COLUMN = "Image name"


class SPAQDataModule(LabelTableDataModule):
    """SPAQ data module.

    Args:
        root: Folder holding ``Annotations/`` and ``TestImage/``.
        labels_file: ``"auto"`` (the ``.xlsx``, else its ``.csv`` export) or a path under root.
        image_dir: Image folder under ``root``.
        score_column: ``MOS``, or an attribute (``Brightness``, ``Colorfulness``,
            ``Contrast``, ``Noisiness``, ``Sharpness``) of the published file.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="spaq",
        title="SPAQ",
        mos_range=(0.0, 100.0),
        higher_better=True,
        split="random",
        labels=SPAQ_LABELS,
        pyiqa_meta_names=("meta_info_SPAQDataset.csv",),
        pyiqa_kind="nr",
        settings={"labels_file": "auto", "image_dir": SPAQ_IMAGE_DIR, "score_column": "MOS"},
    )
    labels_what = "SPAQ annotation file"

    def read_published(self) -> list[ImageRecord]:
        """Read the MOS spreadsheet (or its CSV export)."""
        labels = self.published_label()
        _, rows = read_table(
            labels,
            required=(SPAQ_NAME_COLUMN, self.score_column),
            numeric=(self.score_column,),
            unique=SPAQ_NAME_COLUMN,
        )
        images = self.root / self.image_dir
        return [
            ImageRecord(
                row[SPAQ_NAME_COLUMN],
                images / row[SPAQ_NAME_COLUMN],
                row.numbers[self.score_column],
            )
            for row in rows
        ]

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        if self.score_column != "MOS":
            raise AnnotationError(
                f"{self.name}: dataset.score_column={self.score_column} is read from the "
                f"published file only; pyiqa's {row.source.name} is read by position (name, MOS)"
            )
        return ImageRecord(row.name, self.root / self.image_dir / row.name, row.mos)
