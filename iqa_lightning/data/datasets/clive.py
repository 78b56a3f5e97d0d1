"""LIVE In the Wild Image Quality Challenge Database (CLIVE; Ghadiyaram and Bovik, TIP 2016).

Published layout (``ChallengeDB_release``)::

    root/
      Data/AllImages_release.mat   AllImages_release: 1169x1 cell of image names
      Data/AllMOS_release.mat      AllMOS_release: 1x1169 MOS in [0, 100], higher is better
      Data/AllStdDev_release.mat   (not read)
      Images/                      100.bmp ... and trainingImages/t1.bmp ... t7.bmp

The first seven entries, ``t1.bmp`` ... ``t7.bmp`` in ``Images/trainingImages/``, were shown to
raters for training; published work leaves them out (``exclude_training_images=True``), leaving
1162 images. The dataset has no official split; the default is a seeded random split.

pyiqa layout: ``meta_info_LIVEChallengeDataset.csv`` (``img_name,mos,std``) with ``Images/``;
pyiqa drops the seven training images before indexing its split pickles
(``livechallenge_seed123.pkl``), and so does this module.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from iqa_lightning.errors import AnnotationError

from ..formats import load_mat, mat_strings
from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord
from ..spec import DatasetSpec

__all__ = ["CLIVEDataModule"]

CLIVE_NAMES = "Data/AllImages_release.mat"
CLIVE_MOS = "Data/AllMOS_release.mat"
CLIVE_IMAGE_DIR = "Images"
CLIVE_TRAINING_DIR = "trainingImages"
_TRAINING_IMAGE = re.compile(r"t\d+\.bmp", re.IGNORECASE)


class CLIVEDataModule(PyiqaLayoutDataModule):
    """LIVE Challenge data module.

    Args:
        root: Folder holding ``Data/`` and ``Images/``.
        exclude_training_images: Leave out the seven rater-training images ``t1``-``t7``.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="clive",
        title="LIVE Challenge",
        mos_range=(0.0, 100.0),
        higher_better=True,
        split="random",
        labels=(CLIVE_MOS,),
        image_dirs=(CLIVE_IMAGE_DIR,),
        pyiqa_meta_names=("meta_info_LIVEChallengeDataset.csv",),
        pyiqa_kind="nr",
    )

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        exclude_training_images: bool = True,
        **kwargs,
    ):
        super().__init__(root=root, **kwargs)
        self.exclude_training_images = bool(exclude_training_images)

    def read_published(self) -> list[ImageRecord]:
        """Read the image names and MOS from ``Data/``."""
        names_path, mos_path = self.root / CLIVE_NAMES, self.root / CLIVE_MOS
        self.require_published(self.spec.title, [names_path, mos_path])
        variable = "AllImages_release"
        names = mat_strings(load_mat(names_path, (variable,))[variable], f"{names_path}:{variable}")
        mos = load_mat(mos_path, ("AllMOS_release",))["AllMOS_release"]
        mos = np.asarray(mos, dtype=float).reshape(-1)
        if len(names) != mos.size:
            raise AnnotationError(
                f"{self.name}: {names_path} lists {len(names)} images but {mos_path} has "
                f"{mos.size} scores"
            )
        return [
            self._record(name, float(score))
            for name, score in zip(names, mos, strict=True)
            if not (self.exclude_training_images and _TRAINING_IMAGE.fullmatch(name))
        ]

    def pyiqa_rows(self, rows: list[MetaRow]) -> list[MetaRow]:
        """Without the training images, as pyiqa's split pickles count rows."""
        if not self.exclude_training_images:
            return rows
        return [row for row in rows if not _TRAINING_IMAGE.fullmatch(Path(row.name).name)]

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        return self._record(row.name, row.mos)

    def _record(self, name: str, mos: float) -> ImageRecord:
        images = self.root / CLIVE_IMAGE_DIR
        path = images / name
        if _TRAINING_IMAGE.fullmatch(name) and not path.is_file():
            path = images / CLIVE_TRAINING_DIR / name
        return ImageRecord(name, path, mos)
