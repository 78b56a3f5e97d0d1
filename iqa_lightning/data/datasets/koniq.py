"""KonIQ-10k (Hosu, Lin, Sziranyi, Saupe, TIP 2020), as published.

Layout::

    root/
      1024x768/ and/or 512x384/                 the 10,073 JPEG images
      koniq10k_distributions_sets.csv           image_name,c1,...,c5,c_total,MOS,SD,set
      koniq10k_scores_and_distributions.csv     image_name,c1,...,c5,c_total,MOS,SD,MOS_zscore

The two label files use different scales. In ``koniq10k_distributions_sets.csv`` (the file
with the official training / validation / test ``set`` column, from github.com/subpic/koniq)
``MOS`` is on the rescaled 1-100 scale. In ``koniq10k_scores_and_distributions.csv`` (the
database download) ``MOS`` is the raw 1-5 mean rating and ``MOS_zscore`` is the 1-100 score.
By default (``score_column="auto"``) the module reads the 1-100 score from either file, so
``mos_range`` is (1, 100) in both cases; pass ``score_column="MOS"`` together with
``mos_range=(1, 5)`` to train on the raw 1-5 mean of the scores file.

Both files (and pyiqa's) also give ``SD``, the std of an image's ratings on the 1-5 rating
scale, and its rating histogram ``c1 .. c5`` (fractions in the sets file, counts in the scores
file). ``SD`` becomes ``ImageRecord.mos_std`` on the score's own scale (``SD * (hi - lo) / 4``
for ``mos_range=(lo, hi)``), so batches carry ``target_std = SD / 4``; ``c1 .. c5`` become
``ImageRecord.rating_counts``, read (and required) with ``dataset.target=histogram``.

pyiqa layout: ``meta_info_KonIQ10kDataset.csv`` (``img_name,mos,std,split,c1,...,c5,c_total``,
``mos`` on the 1-100 scale) with an image folder as above. pyiqa's ``split`` column codes the
official sets: ``0`` training (7058 images), ``1`` validation (1000), ``2`` test (2015), as its
``scripts/process_koniq10k.py`` writes them from the authors' ``set`` column; an earlier pyiqa
file wrote the set names instead, and an ``official_split`` column is read the same way.
"""

from __future__ import annotations

from pathlib import Path

from iqa_lightning.errors import AnnotationError, SplitError

from ..pyiqa import MetaRow, PyiqaLayoutDataModule
from ..records import ImageRecord, parse_line_number, read_annotation_csv
from ..spec import DatasetSpec

__all__ = ["KonIQDataModule"]

KONIQ_SETS_FILE = "koniq10k_distributions_sets.csv"
KONIQ_SCORES_FILE = "koniq10k_scores_and_distributions.csv"
KONIQ_IMAGE_DIRS = ("512x384", "1024x768")
#: pyiqa's codes for the official sets in the ``split`` column of its meta-info file.
KONIQ_PYIQA_SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}
_AUTO_SCORE_COLUMN = {KONIQ_SETS_FILE: "MOS", KONIQ_SCORES_FILE: "MOS_zscore"}
#: The rating histogram's columns, worst rating first.
KONIQ_HISTOGRAM = ("c1", "c2", "c3", "c4", "c5")
#: The rating std's column (1-5 rating scale) in the published files and in pyiqa's.
KONIQ_STD = {"published": "SD", "pyiqa": "std"}


class KonIQDataModule(PyiqaLayoutDataModule):
    """KonIQ-10k data module.

    Args:
        root: Folder holding the label file(s) and an image folder.
        image_dir: ``"auto"`` (``512x384`` if present, else ``1024x768``) or a folder name
            under ``root``.
        labels_file: ``"auto"`` (the sets file if present, else the scores file) or a file name
            under ``root``.
        score_column: ``"auto"`` (the 1-100 score of whichever file is read) or a column name.
        **kwargs: Other :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule` and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="koniq",
        title="KonIQ-10k",
        mos_range=(1.0, 100.0),
        higher_better=True,
        split="official",
        labels=(KONIQ_SETS_FILE, KONIQ_SCORES_FILE),
        image_dirs=KONIQ_IMAGE_DIRS,
        pyiqa_meta_names=("meta_info_KonIQ10kDataset.csv",),
        pyiqa_kind="nr",
        settings={"image_dir": "auto", "labels_file": "auto", "score_column": "auto"},
    )
    pyiqa_split_codes = KONIQ_PYIQA_SPLIT_CODES
    #: The image folder in use, once the pyiqa layout has been read.
    _images: Path | None = None

    def published_markers(self) -> list[Path]:
        if self.labels_file != "auto":
            return [self.root / self.labels_file]
        return [self.root / KONIQ_SETS_FILE, self.root / KONIQ_SCORES_FILE]

    def published_requested(self) -> bool:
        return self.labels_file != "auto"

    def read_pyiqa(self) -> list[ImageRecord]:
        """pyiqa's meta-info file; the 1-100 ``mos`` is read by position."""
        if self.score_column != "auto":
            raise AnnotationError(
                f"{self.name}: dataset.score_column={self.score_column} applies to the published "
                "files only; pyiqa's meta-info file is read by position (name, mos)"
            )
        self._images = self.resolve_image_dir()
        return super().read_pyiqa()

    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        std, counts = self._std_and_histogram(row.source, row.line, row.values, KONIQ_STD["pyiqa"])
        return ImageRecord(
            row.name, self._images / row.name, row.mos, mos_std=std, rating_counts=counts
        )

    def _std_and_histogram(self, path: Path, line: int, values: dict[str, str], std_column: str):
        """The rating std on the score's scale and the histogram of one row (None where the
        file has no such column; the histogram only with ``target=histogram``)."""
        std = None
        if std_column in values:
            lo, hi = self.mos_range
            std = parse_line_number(path, line, std_column, values[std_column]) * (hi - lo) / 4
        counts = None
        if self.target == "histogram":
            missing = [c for c in KONIQ_HISTOGRAM if c not in values]
            if missing:
                raise AnnotationError(
                    f"{path}: dataset.target=histogram needs the rating histogram columns "
                    f"{list(KONIQ_HISTOGRAM)}; missing {missing}"
                )
            counts = tuple(parse_line_number(path, line, c, values[c]) for c in KONIQ_HISTOGRAM)
        return std, counts

    def resolve_image_dir(self) -> Path:
        """The image folder in use."""
        if self.image_dir != "auto":
            setting = f"dataset.image_dir={self.image_dir}"
            return self.configured_path(self.image_dir, "image folder", setting)
        for candidate in KONIQ_IMAGE_DIRS:
            if (self.root / candidate).is_dir():
                return self.root / candidate
        looked = ", ".join(str(self.root / c) + "/" for c in KONIQ_IMAGE_DIRS)
        raise FileNotFoundError(
            f"{self.name}: no KonIQ-10k image folder under '{self.root}'; looked for {looked}"
        )

    def resolve_labels_file(self) -> Path:
        """The label file in use."""
        if self.labels_file != "auto":
            setting = "dataset.labels_file"
            return self.configured_path(self.labels_file, "label file", setting, folder=False)
        for candidate in (KONIQ_SETS_FILE, KONIQ_SCORES_FILE):
            if (self.root / candidate).is_file():
                return self.root / candidate
        raise FileNotFoundError(
            f"{self.name}: no KonIQ-10k label file under '{self.root}'; looked for "
            f"{self.root / KONIQ_SETS_FILE} and {self.root / KONIQ_SCORES_FILE}"
        )

    def read_published(self) -> list[ImageRecord]:
        """Read the label file; ``set`` becomes the official split when present."""
        labels = self.resolve_labels_file()
        images = self.resolve_image_dir()
        column = self.score_column
        if column == "auto":
            column = _AUTO_SCORE_COLUMN.get(labels.name, "MOS")
        histogram = KONIQ_HISTOGRAM if self.target == "histogram" else ()
        header, rows = read_annotation_csv(
            labels,
            required=("image_name", column, *histogram),
            numeric=(column,),
            unique="image_name",
        )
        has_sets = "set" in header
        if self.split == "official" and not has_sets:
            raise SplitError(
                f"{self.name}: dataset.split=official needs the 'set' column of "
                f"{KONIQ_SETS_FILE}, but {labels} has none; put that file in '{self.root}' or "
                "use dataset.split=random"
            )
        records = []
        for row in rows:
            std, counts = self._std_and_histogram(
                labels, row.line, row.values, KONIQ_STD["published"]
            )
            records.append(
                ImageRecord(
                    image_id=row["image_name"],
                    path=images / row["image_name"],
                    mos_raw=row.numbers[column],
                    official_split=row["set"] if has_sets else None,
                    mos_std=std,
                    rating_counts=counts,
                )
            )
        return records
