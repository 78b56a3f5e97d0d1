"""CSIQ (Larson and Chandler, J. Electronic Imaging 2010), as published.

Published layout::

    root/
      csiq.DMOS.xlsx   sheet all_by_image: image, dst_idx, dst_type, dst_lev, dmos_std, dmos
                       (866 rows; the header is on row 4 in columns D-I, under title rows)
      src_imgs/        the 30 references, 1600.png ... woman.png
      dst_imgs/        awgn/ blur/ contrast/ fnoise/ jpeg/ jpeg2000/, e.g. awgn/1600.AWGN.1.png

An image is named ``<image>.<TOKEN>.<dst_lev>.png`` in the folder of its ``dst_type``:
``noise`` -> ``awgn/``, ``AWGN``; ``blur`` -> ``blur/``, ``BLUR``; ``contrast`` ->
``contrast/``, ``contrast``; ``fnoise`` -> ``fnoise/``, ``fnoise``; ``jpeg`` -> ``jpeg/``,
``JPEG``; ``jpeg 2000`` -> ``jpeg2000/``, ``jpeg2000``. Copies with all images directly in
``dst_imgs/`` (as pyiqa's archive) work too. A CSV export of the sheet
(``labels_file="csiq.DMOS.csv"``, header as the first non-empty line) is read the same way.
Scores are DMOS in [0, 1], lower is better (``higher_better=False``).

pyiqa layout: ``meta_info_CSIQDataset.csv`` (``ref_name,dist_name,dmos``, e.g.
``1600.png,1600.AWGN.1.png,0.061989``) with the images as above.
"""

from __future__ import annotations

from pathlib import Path

from iqa_lightning.errors import AnnotationError

from ..formats import read_table
from ..pyiqa import LabelTableDataModule, MetaRow
from ..records import ImageRecord
from ..spec import DatasetSpec

__all__ = ["CSIQ_DISTORTIONS", "CSIQDataModule"]

CSIQ_LABELS = ("csiq.DMOS.xlsx", "csiq.DMOS.csv")
CSIQ_SHEET = "all_by_image"
#: ``dst_type`` of the spreadsheet -> (folder under ``dst_imgs``, token in the file name).
CSIQ_DISTORTIONS = {
    "noise": ("awgn", "AWGN"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
    "fnoise": ("fnoise", "fnoise"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
}
_FOLDER_OF_TOKEN = {token: folder for folder, token in CSIQ_DISTORTIONS.values()}


class CSIQDataModule(LabelTableDataModule):
    """CSIQ data module.

    Args:
        root: Folder holding the DMOS spreadsheet and ``dst_imgs/``.
        labels_file: ``"auto"`` (``csiq.DMOS.xlsx``, else ``csiq.DMOS.csv``) or a file name
            under ``root`` (``.xlsx``, or a ``.csv`` export of the ``all_by_image`` sheet).
        image_dir: Folder of the distorted images under ``root``.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="csiq",
        title="CSIQ",
        mos_range=(0.0, 1.0),
        higher_better=False,
        split="reference_disjoint",
        labels=CSIQ_LABELS,
        pyiqa_meta_names=("meta_info_CSIQDataset.csv",),
        pyiqa_kind="fr",
        settings={"labels_file": "auto", "image_dir": "dst_imgs"},
    )
    labels_what = "CSIQ DMOS file"

    def read_published(self) -> list[ImageRecord]:
        """Read the ``all_by_image`` sheet (or its CSV export)."""
        labels = self.published_label()
        _, rows = read_table(
            labels,
            required=("image", "dst_type", "dst_lev", "dmos"),
            numeric=("dst_lev", "dmos"),
            sheet=CSIQ_SHEET if labels.suffix.lower() == ".xlsx" else None,
        )
        xlsx = labels.suffix.lower() == ".xlsx"
        records = []
        for row in rows:
            where = f"{labels}, sheet '{CSIQ_SHEET}', row" if xlsx else f"{labels}, line"
            kind = row["dst_type"].strip().lower()
            if kind not in CSIQ_DISTORTIONS:
                raise AnnotationError(
                    f"{where} {row.line}, column 'dst_type': unknown distortion "
                    f"{row['dst_type']!r}; expected one of {sorted(CSIQ_DISTORTIONS)}"
                )
            level = row.numbers["dst_lev"]
            if not level.is_integer():
                raise AnnotationError(
                    f"{where} {row.line}, column 'dst_lev': {row['dst_lev']!r} is not a whole "
                    "number"
                )
            folder, token = CSIQ_DISTORTIONS[kind]
            image = row["image"]
            file_name = f"{image}.{token}.{int(level)}.png"
            path = self.image_path(folder, file_name)
            records.append(ImageRecord(file_name, path, row.numbers["dmos"], f"{image}.png"))
        duplicate = _first_duplicate([r.image_id for r in records])
        if duplicate:
            raise AnnotationError(f"{labels}: image '{duplicate}' is listed twice")
        return records

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        """``dist_name`` is a file name like ``1600.AWGN.1.png``; ``ref_name`` the reference."""
        parts = row.name.split(".")
        folder = _FOLDER_OF_TOKEN.get(parts[-3]) if len(parts) >= 4 else None
        path = self.image_path(folder, row.name)
        return ImageRecord(row.name, path, row.mos, Path(row.ref_name).name)

    def image_path(self, folder: str | None, file_name: str) -> Path:
        """``dst_imgs/<folder>/<file>`` as published, or ``dst_imgs/<file>`` where only that
        exists."""
        images = self.root / self.image_dir
        nested = images / folder / file_name if folder else None
        if nested is not None and nested.is_file():
            return nested
        flat = images / file_name
        return flat if flat.is_file() or nested is None else nested


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
