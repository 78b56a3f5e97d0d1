"""KoNViD-1k (Hosu, Hahn, Jenadeleh, Lin, Men, Szirányi, Li, Saupe, QoMEX 2017), as published.

Layout (the two archives of the database page, unpacked side by side)::

    root/
      KoNViD_1k_videos/<flickr_id>.mp4          the 1,200 videos (8 s each, mostly 960x540)
      KoNViD_1k_metadata/KoNViD_1k_attributes.csv
                                                one row per video: flickr_id, MOS (1-5), and
                                                the authors' other attributes
      (or KoNViD_1k_attributes.csv, or KoNViD_1k_mos.csv: flickr_id, mos, directly in root)

A video's ``image_id`` is its file name, ``<flickr_id>.mp4``; its score is the ``MOS`` column
(``mos`` in ``KoNViD_1k_mos.csv``) on the 1-5 scale, higher is better. KoNViD-1k publishes no
split: the default is a seeded random split (papers report repeated random 80/20 splits;
``dataset.split_ratios`` sets the shares). Each video is scored from its frames sampled at
1 fps (:func:`~iqa_lightning.data.video.frame_indices`), batches carry ``pixels``
``[B, frames, 3, S, S]`` (:class:`~iqa_lightning.data.video.VideoDataModule`).
"""

from __future__ import annotations

from pathlib import Path

from iqa_lightning.errors import AnnotationError

from ..records import ImageRecord, read_annotation_csv
from ..spec import DatasetSpec
from ..video import VideoDataModule

__all__ = ["KoNViDDataModule"]

KONVID_ATTRIBUTES = "KoNViD_1k_attributes.csv"
KONVID_MOS = "KoNViD_1k_mos.csv"
KONVID_METADATA_DIR = "KoNViD_1k_metadata"
KONVID_VIDEO_DIR = "KoNViD_1k_videos"
#: The label files looked for with ``labels_file=auto``, in order (root, then the metadata
#: archive's folder).
KONVID_LABELS = tuple(
    f"{folder}{name}"
    for name in (KONVID_ATTRIBUTES, KONVID_MOS)
    for folder in ("", f"{KONVID_METADATA_DIR}/")
)
KONVID_ID = "flickr_id"
#: The score column of each file (``score_column=auto``).
KONVID_SCORE = {KONVID_ATTRIBUTES: "MOS", KONVID_MOS: "mos"}


class KoNViDDataModule(VideoDataModule):
    """KoNViD-1k data module (videos).

    Args:
        root: Folder holding ``KoNViD_1k_videos/`` and the label file.
        labels_file: ``"auto"`` (the first of :data:`KONVID_LABELS` present) or a file under
            ``root``.
        video_dir: The video folder under ``root``.
        score_column: ``"auto"`` (``MOS`` of the attributes file, ``mos`` of the MOS file) or
            a column name.
        **kwargs: :class:`~iqa_lightning.data.base.IQADataModule` arguments.

    The dataset's name, score range, direction and default split are in :attr:`spec`.
    """

    spec = DatasetSpec(
        name="konvid",
        title="KoNViD-1k",
        mos_range=(1.0, 5.0),
        higher_better=True,
        split="random",
        labels=KONVID_LABELS,
        image_dirs=(KONVID_VIDEO_DIR,),
        settings={"labels_file": "auto", "video_dir": KONVID_VIDEO_DIR, "score_column": "auto"},
    )
    labels_file: str
    video_dir: str
    score_column: str

    def labels_path(self) -> Path:
        """The label file in use.

        Raises:
            FileNotFoundError: None is there; the message lists every name looked for.
        """
        names = KONVID_LABELS if self.labels_file == "auto" else (self.labels_file,)
        for name in names:
            if (self.root / name).is_file():
                return self.root / name
        looked = ", ".join(str(self.root / n) for n in names)
        raise FileNotFoundError(
            f"{self.name}: no KoNViD-1k label file (dataset.labels_file={self.labels_file}); "
            f"looked for {looked}"
        )

    def read_records(self) -> list[ImageRecord]:
        """One record per row of the label file: ``<flickr_id>.mp4`` in the video folder."""
        labels = self.labels_path()
        videos = self.root / self.video_dir
        if not videos.is_dir():
            raise FileNotFoundError(
                f"{self.name}: video folder '{videos}' (dataset.video_dir) does not exist"
            )
        column = self.score_column
        if column == "auto":
            column = KONVID_SCORE.get(labels.name, "MOS")
        _, rows = read_annotation_csv(
            labels, required=(KONVID_ID, column), numeric=(column,), unique=KONVID_ID
        )
        records = []
        for row in rows:
            flickr_id = row[KONVID_ID]
            if not flickr_id or "/" in flickr_id or "\\" in flickr_id:
                raise AnnotationError(
                    f"{labels}, line {row.line}: {KONVID_ID} {flickr_id!r} is not a video id"
                )
            name = f"{flickr_id}.mp4"
            records.append(ImageRecord(name, videos / name, row.numbers[column]))
        return records
