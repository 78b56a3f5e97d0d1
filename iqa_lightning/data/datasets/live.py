"""LIVE Image Quality Assessment Database, Release 2 (Sheikh, Sabir, Bovik, TIP 2006).

Published layout::

    root/
      dmos.mat            dmos (1x982 DMOS), orgs (1x982; 1 marks an undistorted reference copy)
      refnames_all.mat    refnames_all (1x982 cell: the reference image of each entry)
      jp2k/ jpeg/ wn/ gblur/ fastfading/    img1.bmp ... (227, 233, 174, 174, 174 entries)
      refimgs/            the 29 reference images
      dmos_realigned.mat  (optional) dmos_new, the realigned DMOS, with orgs and dmos_std

The 982 entries of the .mat files run through the folders in that order: entries 1-227 are
``jp2k/img1.bmp`` ... ``jp2k/img227.bmp``, entries 228-460 ``jpeg/img1.bmp`` ..., and so on.
Entries with ``orgs == 1`` are copies of the references (DMOS 0); they are left out, as in
published work, leaving 779 distorted images. Scores are DMOS, lower is better
(``higher_better=False``). ``dmos_file="dmos_realigned.mat"`` reads the realigned ``dmos_new``.

pyiqa layout: ``meta_info_LIVEIQADataset.csv`` (``ref_name,dist_name,mos``; ``refimgs/x.bmp``,
``jp2k/img2.bmp``, and the ``dmos.mat`` DMOS despite the column name) with the folders above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iqa_lightning.errors import AnnotationError

from ..formats import load_mat, mat_strings
from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord
from ..spec import DatasetSpec

__all__ = ["LIVE_FOLDERS", "LIVEDataModule"]

#: Distortion folders and their number of entries, in the order of the .mat files.
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_REFNAMES = "refnames_all.mat"
_SCORE_VARIABLES = ("dmos", "dmos_new")


class LIVEDataModule(PyiqaLayoutDataModule):
    """LIVE Release 2 data module.

    Args:
        root: Folder holding ``dmos.mat``, ``refnames_all.mat`` and the image folders.
        dmos_file: ``dmos.mat`` (variable ``dmos``) or ``dmos_realigned.mat`` (``dmos_new``).
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` arguments
            (layout, meta_file, split_column, split_file, split_index) and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="live",
        title="LIVE Release 2",
        mos_range=(0.0, 100.0),
        higher_better=False,
        split="reference_disjoint",
        image_dirs=tuple(folder for folder, _ in LIVE_FOLDERS),
        pyiqa_meta_names=("meta_info_LIVEIQADataset.csv",),
        pyiqa_kind="fr",
        settings={"dmos_file": "dmos.mat"},
    )

    def published_markers(self) -> list[Path]:
        return [self.root / self.dmos_file]

    def read_published(self) -> list[ImageRecord]:
        """Read the DMOS and reference names; left-out reference copies are not listed."""
        scores_path = self.root / self.dmos_file
        refs_path = self.root / LIVE_REFNAMES
        self.require_published(self.spec.title, [scores_path, refs_path])
        data = load_mat(scores_path, ("orgs",))
        variable = next((v for v in _SCORE_VARIABLES if v in data), None)
        if variable is None:
            raise AnnotationError(
                f"{scores_path}: has none of the DMOS variables {list(_SCORE_VARIABLES)}; "
                f"its variables are {sorted(data)}"
            )
        dmos = np.asarray(data[variable], dtype=float).reshape(-1)
        orgs = np.asarray(data["orgs"]).reshape(-1)
        refs = mat_strings(load_mat(refs_path, ("refnames_all",))["refnames_all"], str(refs_path))
        expected = sum(count for _, count in LIVE_FOLDERS)
        sizes = {f"{scores_path.name}:{variable}": dmos.size, f"{scores_path.name}:orgs": orgs.size}
        sizes[f"{refs_path.name}:refnames_all"] = len(refs)
        wrong = {k: v for k, v in sizes.items() if v != expected}
        if wrong:
            raise AnnotationError(
                f"{self.name}: LIVE Release 2 has {expected} entries "
                f"({', '.join(f'{f} {n}' for f, n in LIVE_FOLDERS)}), but {wrong}"
            )
        records = []
        index = 0
        for folder, count in LIVE_FOLDERS:
            for k in range(1, count + 1):
                if orgs[index] not in (0, 1):
                    raise AnnotationError(
                        f"{scores_path}: orgs entry {index + 1} is {orgs[index]!r}, not 0 or 1"
                    )
                if orgs[index] == 0:
                    image_id = f"{folder}/img{k}.bmp"
                    records.append(
                        ImageRecord(image_id, self.root / image_id, float(dmos[index]), refs[index])
                    )
                index += 1
        return records

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        """``dist_name`` is relative to root; pyiqa's older file omits the ``.bmp`` suffix."""
        image_id = row.name if Path(row.name).suffix else f"{row.name}.bmp"
        return ImageRecord(image_id, self.root / image_id, row.mos, Path(row.ref_name).name)
