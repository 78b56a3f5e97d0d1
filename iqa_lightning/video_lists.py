"""What ``videos=`` of ``python -m iqa_lightning.score`` names, and how the videos are scored.

``videos=`` is a folder (every file below it with a video extension,
:data:`~iqa_lightning.data.video.VIDEO_SUFFIXES`), one video file, or a list read as image lists
are (a CSV with a header, a JSON list of paths or objects, a text file of paths; the same
``image_key`` / ``mos_key`` / ``image_root`` settings). Each video is scored from its frames
sampled at 1 fps as Q-Align's ``load_video`` samples them (:mod:`iqa_lightning.data.video`),
all in one prompt, by a backbone family that takes frames (mPLUG-Owl2); the output files are
those of images (``image,score[,mos]``, the skipped videos with their reason, the metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from iqa_lightning.data.dataset import make_loader
from iqa_lightning.data.video import VIDEO_SUFFIXES, SameLengthBatches, VideoInputs
from iqa_lightning.errors import ConfigError
from iqa_lightning.image_lists import (
    LIST_SUFFIXES,
    ImageList,
    list_folder,
    read_list,
)
from iqa_lightning.scorer import Scorer, Scores, score_loader

__all__ = ["read_videos", "score_videos"]


def read_videos(spec: Any, image_root: Any = None, image_key: str = "auto",
                mos_key: str | None = "auto") -> ImageList:  # fmt: skip
    """The videos ``videos=`` names (see the module docstring).

    Raises:
        FileNotFoundError: ``spec`` does not exist.
        ConfigError: An empty folder, an unknown file type, or a list without a path column.
    """
    path = Path(str(spec)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"videos={spec}: no such file or folder")
    if path.is_dir():
        files, skipped = list_folder(path, set(VIDEO_SUFFIXES))
        if not files and not skipped:
            raise ConfigError(
                f"videos={spec}: no video files ({', '.join(VIDEO_SUFFIXES)}) in the folder or "
                "below it"
            )
        return ImageList(files, [p.relative_to(path).as_posix() for p in files], skipped=skipped)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return ImageList([path], [str(spec)])
    if suffix not in LIST_SUFFIXES:
        raise ConfigError(
            f"videos={spec}: not a folder, a video file ({', '.join(VIDEO_SUFFIXES)}) or a list "
            f"({', '.join(LIST_SUFFIXES)})"
        )
    entries, mos, key = read_list(path, image_key, mos_key)
    if not entries:
        raise ConfigError(f"videos={spec}: the list has no paths")
    root = Path(str(image_root)).expanduser() if image_root else path.parent
    paths = [Path(e).expanduser() if Path(e).expanduser().is_absolute() else root / e
             for e in entries]  # fmt: skip
    return ImageList(paths, [str(e) for e in entries], mos, key)


def check_takes_frames(scorer: Scorer) -> None:
    """Refuse a model whose backbone cannot take several frames in one prompt.

    Raises:
        ConfigError: The module has no backbone that takes frames.
    """
    backbone = getattr(scorer.module, "backbone", None)
    if not getattr(backbone, "takes_frames", False):
        family = getattr(backbone, "family", type(scorer.module).__name__)
        raise ConfigError(
            f"videos=: the {family} model cannot take a video's frames in one prompt; score "
            "videos with an mPLUG-Owl2 model (model=q_align_vqa, one_align, tiny_mplug_owl2)"
        )


def score_videos(scorer: Scorer, videos: ImageList) -> Scores:
    """Score each video of ``videos`` with ``scorer``'s module, trainer and settings, listing
    (not raising on) the videos that cannot be read; videos of equal frame counts share a batch.

    Raises:
        ConfigError: The scorer's backbone cannot take frames.
    """
    check_takes_frames(scorer)
    dataset = VideoInputs(
        videos.paths, scorer.image_size, names=videos.names, mos=videos.mos, resize=scorer.resize
    )
    if not len(dataset):
        return Scores(images=[], scores=torch.zeros(0), mos=videos.mos and [])
    batches = SameLengthBatches(dataset.lengths(), scorer.batch_size)
    loader = make_loader(dataset, 1, scorer.num_workers, batch_sampler=batches)
    rows = score_loader(scorer.trainer, scorer.module, loader)
    good = [row for row in rows if not row["error"]]
    return Scores(
        images=[row["image"] for row in good],
        scores=torch.tensor([row["score"] for row in good], dtype=torch.float32),
        mos=None if videos.mos is None else [row["mos"] for row in good],
        skipped=[(row["image"], row["error"]) for row in rows if row["error"]],
    )
