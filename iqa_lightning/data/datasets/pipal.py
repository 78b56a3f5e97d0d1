"""PIPAL (Jinjin Gu et al., ECCV 2020), public training set of the NTIRE 2021 challenge.

Published layout::

    root/
      Train_Label/    A0001.txt ... one file per reference: "<distorted image>,<Elo score>"
      Train_Ref/      A0001.bmp ... the 200 references (not read)
      Distortion_1/ ... Distortion_4/    the 23,200 distorted images, A0001_00_00.bmp ...

The authors' README names the folders ``MOS_Scores_train/`` and ``Distortion/Distortion_1`` ...;
both namings work, as does pyiqa's single ``Dist_Imgs/`` folder. Scores are Elo ratings, higher
is better (about 1000-1750 in the published labels; ``mos_range`` is [800, 2000]). Each label
file holds the images of one reference (its ``ref_id``), so the default
``reference_disjoint`` split keeps a reference's content in one split. The public files have
no validation or test labels; ``split="official"`` needs pyiqa's meta-info file with its
``official_split`` column.

pyiqa layout: ``meta_info_PIPALDataset.csv`` (``hq_name,dist_name,elo_score``) with the image
folders above.
"""

from __future__ import annotations

import csv
from pathlib import Path

from iqa_lightning.errors import AnnotationError

from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord, parse_line_number
from ..spec import DatasetSpec

__all__ = ["PIPAL_IMAGE_DIRS", "PIPALDataModule"]

PIPAL_LABEL_DIRS = ("Train_Label", "MOS_Scores_train")
_PARTS = tuple(f"Distortion_{i}" for i in range(1, 5))
#: Folders that may hold the distorted images (all that exist are used).
PIPAL_IMAGE_DIRS = (*_PARTS, *(f"Distortion/{p}" for p in _PARTS), "Dist_Imgs")


class PIPALDataModule(PyiqaLayoutDataModule):
    """PIPAL data module.

    Args:
        root: Folder holding the label and image folders.
        image_dir: ``"auto"`` (every folder of :data:`PIPAL_IMAGE_DIRS` that exists) or one
            folder under ``root``.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="pipal",
        title="PIPAL",
        mos_range=(800.0, 2000.0),
        higher_better=True,
        split="reference_disjoint",
        labels=PIPAL_LABEL_DIRS,
        image_dirs=PIPAL_IMAGE_DIRS,
        pyiqa_meta_names=("meta_info_PIPALDataset.csv",),
        pyiqa_kind="fr",
        settings={"image_dir": "auto"},
    )
    #: Image file name -> path in the image folders, once they have been listed.
    _index: dict[str, Path] | None = None
    _default = Path()

    def read_published(self) -> list[ImageRecord]:
        """Read every ``<reference>.txt`` of the label folder."""
        folder = next((p for p in self.published_markers() if p.is_dir()), None)
        files = sorted(folder.glob("*.txt")) if folder is not None else []
        if not files:
            raise FileNotFoundError(
                f"{self.name}: no PIPAL label files (*.txt) in "
                + " or ".join(str(p) for p in self.published_markers())
            )
        records = []
        for path in files:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                for line, cells in enumerate(csv.reader(handle), start=1):
                    if not any(cell.strip() for cell in cells):
                        continue
                    if len(cells) != 2 or not cells[0].strip():
                        raise AnnotationError(
                            f"{path}, line {line}: expected '<image>,<score>', got {cells}"
                        )
                    name = cells[0].strip()
                    score = parse_line_number(path, line, "score", cells[1].strip())
                    records.append(ImageRecord(name, self.image_path(name), score, path.stem))
        return records

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        ref_id = Path(row.ref_name).stem
        return ImageRecord(row.name, self.image_path(row.name), row.mos, ref_id)

    def image_path(self, name: str) -> Path:
        """Where the distorted image ``name`` is (its expected place when it is missing)."""
        if self._index is None:
            folders = self._image_folders()
            files = [path for folder in folders for path in folder.iterdir()]
            self._index = {path.name: path for path in files}
            self._default = folders[0]
            if len(files) != len(self._index):
                raise AnnotationError(
                    f"{self.name}: the image folders {[str(f) for f in folders]} hold files with "
                    "the same name; keep one copy of each image or set dataset.image_dir"
                )
        return self._index.get(name, self._default / name)

    def _image_folders(self) -> list[Path]:
        if self.image_dir != "auto":
            return [self.configured_path(self.image_dir, "image folder", "dataset.image_dir")]
        folders = [self.root / d for d in PIPAL_IMAGE_DIRS if (self.root / d).is_dir()]
        if not folders:
            raise FileNotFoundError(
                f"{self.name}: no PIPAL image folder under '{self.root}'; looked for "
                + ", ".join(f"{self.root / d}/" for d in PIPAL_IMAGE_DIRS)
                + ". Set dataset.image_dir"
            )
        return folders
