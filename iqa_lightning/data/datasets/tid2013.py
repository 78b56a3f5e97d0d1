"""TID2013 (Ponomarenko et al., Signal Processing: Image Communication 2015), as published.

Published layout::

    root/
      mos_with_names.txt   "<mos> <image>" per line, 3000 lines, e.g. "5.51429 I01_01_1.bmp"
      mos_std.txt          (not read)
      distorted_images/    i01_01_1.bmp ... i25_24_5.bmp
      reference_images/    I01.BMP ... I24.BMP, i25.bmp (not read)

An image ``iRR_DD_L.bmp`` is reference ``RR``, distortion ``DD``, level ``L``; its reference id
is ``IRR`` (case folded). The case of a name in ``mos_with_names.txt`` does not always match
the file on disk (``I01_01_1.bmp`` vs ``i01_01_1.bmp``), so names are matched to the files of
``distorted_images/`` ignoring case, and the file's own name is the image id. Scores are MOS in
[0, 9], higher is better.

pyiqa layout: ``meta_info_TID2013Dataset.csv`` (``ref_name,dist_name,mos,std``) with
``distorted_images/``.
"""

from __future__ import annotations

from pathlib import Path

from iqa_lightning.errors import AnnotationError

from ..formats import read_text_columns
from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord
from ..spec import DatasetSpec

__all__ = ["TID2013DataModule"]

TID_LABELS = "mos_with_names.txt"
TID_IMAGE_DIR = "distorted_images"


class TID2013DataModule(PyiqaLayoutDataModule):
    """TID2013 data module.

    Args:
        root: Folder holding ``mos_with_names.txt`` and ``distorted_images/``.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="tid2013",
        title="TID2013",
        mos_range=(0.0, 9.0),
        higher_better=True,
        split="reference_disjoint",
        labels=(TID_LABELS,),
        image_dirs=(TID_IMAGE_DIR,),
        pyiqa_meta_names=("meta_info_TID2013Dataset.csv",),
        pyiqa_kind="fr",
    )
    _on_disk: dict[str, Path] | None = None

    def read_published(self) -> list[ImageRecord]:
        """Read ``mos_with_names.txt``."""
        labels = self.root / TID_LABELS
        rows = read_text_columns(labels, ("mos", "image"), numeric=("mos",))
        records = []
        seen: dict[str, int] = {}
        for row in rows:
            key = row["image"].lower()
            if key in seen:
                raise AnnotationError(
                    f"{labels}: image '{row['image']}' on lines {seen[key]} and {row.line}"
                )
            seen[key] = row.line
            records.append(self._record(row["image"], row.numbers["mos"], labels, row.line))
        return records

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        return self._record(row.name, row.mos, row.source, row.line)

    def image_path(self, name: str) -> Path:
        """The file of ``distorted_images/`` named ``name``, ignoring case."""
        folder = self.root / TID_IMAGE_DIR
        exact = folder / name
        if exact.is_file():
            return exact
        if self._on_disk is None:
            files = folder.iterdir() if folder.is_dir() else ()
            self._on_disk = {p.name.lower(): p for p in files}
        return self._on_disk.get(name.lower(), exact)

    def _record(self, name: str, mos: float, where: Path, line: int) -> ImageRecord:
        stem = Path(name).stem
        if len(stem) < 3 or stem[0].lower() != "i" or not stem[1:3].isdigit():
            raise AnnotationError(
                f"{where}, line {line}: image name {name!r} is not of the form iRR_DD_L.bmp"
            )
        path = self.image_path(name)
        return ImageRecord(path.name, path, mos, f"I{stem[1:3]}")
