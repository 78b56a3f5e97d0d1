"""Videos as the frames a video scorer sees: sampled at 1 fps as Q-Align's ``load_video`` does.

Q-Align (q_align/evaluate/scorer.py and vqa_eval.py, ``load_video``) reads a video's average
frame rate ``fps`` and its frame count ``n`` and keeps the frames

    ``int(fps * i)`` for ``i`` in ``range(int(n / fps))``

in that order: one frame per whole second, the first at index 0 (a 3-second clip at 10 fps gives
frames 0, 10 and 20). :func:`frame_indices` is that rule; a clip shorter than one second, of which
the rule keeps no frame (Q-Align's scorer then fails), is scored by its first frame.

Decoding uses PyAV (the ``video`` extra: ``pip install iqa-lightning[video]``): the frame count is
the number of the stream's packets (the index a frame-accurate reader builds), the rate the
stream's average frame rate (its guessed rate where the container gives none), and the frames are
decoded in order and converted to 8-bit RGB. Each kept frame is then made square and resized as
an image is (:func:`~iqa_lightning.data.images.resize_to_array`): a video sample's ``pixels`` are
``[frames, 3, S, S]``; the frames of one video go into one prompt as one image placeholder holding
every frame's tokens in order (Q-Align's video scorer).

:class:`VideoInputs` is the scoring dataset (one video per item, a video that cannot be read gives
one black frame and its reason in ``error``); :class:`SameLengthBatches` batches videos of equal
frame counts together, since the frames of a batch are one tensor.

Labelled videos (the KoNViD-1k and LSVQ data modules) build on :class:`VideoDataModule`: an
:class:`~iqa_lightning.data.base.IQADataModule` whose records are videos, whose samples are
:class:`LabelledVideos` (``pixels`` ``[frames, 3, S, S]``, ``target``, ``mos_raw``,
``image_id``) and whose loaders batch them with :class:`SameLengthBatches` (shuffled afresh each
epoch for training), so batches carry ``pixels`` ``[B, frames, 3, S, S]``. A video that cannot
be read stops a run with one line naming it and the reason, or, with
``dataset.on_bad_image=skip``, every video is probed in :meth:`~VideoDataModule.setup` and the
bad ones are skipped, counted and listed (:func:`find_bad_videos`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from iqa_lightning.errors import ConfigError, ImageLoadError

from .base import IQADataModule
from .checks import CHECK_LEVELS, check_workers, report_bad_files
from .dataset import LabelledImage, make_loader
from .images import array_to_tensor, resize_to_array
from .records import ImageRecord

__all__ = [
    "VIDEO_SUFFIXES",
    "LabelledVideos",
    "SameLengthBatches",
    "VideoDataModule",
    "VideoInputs",
    "find_bad_videos",
    "frame_indices",
    "load_video",
    "probe_video",
    "video_error",
    "video_problem",
]

logger = logging.getLogger("iqa_lightning.data")

#: File extensions read as videos by ``videos=`` and the video datasets.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def video_error(path: str | os.PathLike, reason: str) -> ImageLoadError:
    """The one-line error of a video that cannot be read, naming the file and the reason."""
    return ImageLoadError(f"cannot load video '{path}': {reason}", path=path, reason=reason)


def _av():
    try:
        import av  # PyAV, the optional video decoder (the ``video`` extra)
    except ImportError as err:
        raise ConfigError(
            "reading videos needs PyAV: pip install 'iqa-lightning[video]' (or pip install av)"
        ) from err
    return av


def frame_indices(num_frames: int, fps: float) -> list[int]:
    """Q-Align's 1 fps frame indices: ``int(fps * i)`` for ``i < int(num_frames / fps)``; the
    first frame alone for a clip shorter than one second.

    Raises:
        ValueError: No frame or a rate that is not a positive number.
    """
    if num_frames < 1:
        raise ValueError("the video has no frames")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"the video's frame rate {fps!r} is not a positive number")
    seconds = int(num_frames / fps)
    return [int(fps * i) for i in range(seconds)] or [0]


def _open(path: str | os.PathLike):
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise video_error(path, _reason(err)) from None
    if not container.streams.video:
        container.close()
        raise video_error(path, "no video stream")
    return container


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


def probe_video(path: str | os.PathLike) -> tuple[int, float]:
    """``(frame count, average frame rate)`` of a video, without decoding it.

    Raises:
        ImageLoadError: The file is no readable video (the message names it).
    """
    av = _av()
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as err:
        raise video_error(path, _reason(err)) from None
    finally:
        container.close()
    if count < 1:
        raise video_error(path, "no frames")
    if not rate:
        raise video_error(path, "no frame rate")
    return count, float(rate)


def load_video(path: str | os.PathLike) -> tuple[list[Image.Image], list[int]]:
    """The 1 fps frames of a video as RGB images, and their indices (:func:`frame_indices`).

    Raises:
        ImageLoadError: The file is no readable video, or a frame to keep cannot be decoded.
    """
    av = _av()
    count, fps = probe_video(path)
    wanted = frame_indices(count, fps)
    keep, frames = set(wanted), []
    container = _open(path)
    try:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index in keep:
                frames.append(Image.fromarray(frame.to_ndarray(format="rgb24")))
            if index >= wanted[-1]:
                break
    except av.FFmpegError as err:
        raise video_error(path, _reason(err)) from None
    finally:
        container.close()
    if len(frames) != len(wanted):
        raise video_error(path, f"frame {wanted[len(frames)]} of {count} cannot be decoded")
    return frames, wanted


def frames_to_tensor(frames: Sequence[Image.Image], size: int, resize: str) -> torch.Tensor:
    """``[frames, 3, size, size]`` pixels in [0, 1], each frame resized as an image is."""
    arrays = [resize_to_array(frame, size, resize=resize) for frame in frames]
    return torch.stack([array_to_tensor(a) for a in arrays])


class VideoInputs(Dataset):
    """Videos as samples ``pixels`` ``[frames, 3, S, S]`` / ``image`` / ``error`` (/ ``mos``),
    for scoring; a video that cannot be read gives one black frame and its reason in
    ``error``, so one bad file never stops a run.

    Args:
        videos: Video files.
        image_size: Side of the square each frame is resized to.
        names: Name of each video in the output (default: the path).
        mos: Subjective score of each video, when known.
        resize: How frames become square (:data:`~iqa_lightning.data.images.RESIZES`).
    """

    def __init__(
        self,
        videos: Sequence[str | os.PathLike],
        image_size: int,
        names: Sequence[str] | None = None,
        mos: Sequence[float] | None = None,
        resize: str = "squash",
    ) -> None:
        self.videos = [Path(v) for v in videos]
        self.image_size = int(image_size)
        self.resize = resize
        self.names = [str(v) for v in videos] if names is None else list(names)
        self.mos = None if mos is None else [float(m) for m in mos]
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.videos)

    def lengths(self) -> list[int]:
        """Frames each video gives (1 for a video that cannot be read), probed once."""
        if self._lengths is None:
            self._lengths = [_length(v) for v in self.videos]
        return self._lengths

    def __getitem__(self, index: int) -> dict[str, Any]:
        error = ""
        try:
            frames, _ = load_video(self.videos[index])
        except ImageLoadError as err:
            error, frames = err.reason or str(err), [Image.new("RGB", (1, 1))]
        pixels = frames_to_tensor(frames, self.image_size, self.resize)
        sample = {"pixels": pixels, "image": self.names[index], "error": error}
        if self.mos is not None:
            sample["mos"] = self.mos[index]
        return sample


def _length(path: Path) -> int:
    try:
        return len(frame_indices(*probe_video(path)))
    except (ImageLoadError, ValueError):
        return 1


class SameLengthBatches(Sampler[list[int]]):
    """Batches of at most ``batch_size`` videos with the same frame count (a batch's frames are
    one tensor), in the order of ``order`` within each length; lengths in order of first
    appearance.

    Args:
        lengths: Frames of each video.
        batch_size: Videos per batch.
        order: Indices to batch (default: all, in dataset order); a shuffled order gives
            shuffled batches.
        generator: Shuffle afresh on every pass (training): each iteration draws a new order of
            the indices and then of the batches from it; None keeps one fixed order.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        order: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)
        self.order = None if order is None else list(order)
        self.generator = generator

    def _batches(self, order: Sequence[int] | None = None) -> list[list[int]]:
        groups: dict[int, list[int]] = {}
        if order is None:
            order = range(len(self.lengths)) if self.order is None else self.order
        for index in order:
            groups.setdefault(self.lengths[index], []).append(index)
        size = self.batch_size
        return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is None:
            return iter(self._batches())
        base = list(range(len(self.lengths))) if self.order is None else self.order
        drawn = torch.randperm(len(base), generator=self.generator).tolist()
        batches = self._batches([base[i] for i in drawn])
        shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([batches[i] for i in shuffled])

    def __len__(self) -> int:
        return len(self._batches())


class LabelledVideos(Dataset):
    """Labelled videos as samples ``pixels`` ``[frames, 3, S, S]`` (the 1 fps frames of
    :func:`load_video`, each resized as an image is), ``target``, ``mos_raw``, ``image_id``
    (and ``target_std`` where the item has one).

    A video that cannot be read raises :class:`~iqa_lightning.errors.ImageLoadError`, one line
    naming the file and the reason (:func:`video_error`).

    Args:
        items: Videos with their labels (:class:`~iqa_lightning.data.dataset.LabelledImage`).
        image_size: Side of the square each frame is resized to.
        hflip: Mirror all frames of a video together with probability 0.5.
        resize: How frames become square (:data:`~iqa_lightning.data.images.RESIZES`).
        lengths: Frames each video gives, when already known (probed otherwise, once).
    """

    def __init__(
        self,
        items: Sequence[LabelledImage],
        image_size: int,
        hflip: bool = False,
        resize: str = "squash",
        lengths: Sequence[int] | None = None,
    ) -> None:
        self.items = list(items)
        self.image_size = int(image_size)
        self.hflip = bool(hflip)
        self.resize = resize
        self._lengths = None if lengths is None else list(lengths)

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self, workers: int = 1) -> list[int]:
        """Frames each video gives (1 for one that cannot be read), probed once on
        ``workers`` threads."""
        if self._lengths is None:
            paths = [Path(item.path) for item in self.items]
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                self._lengths = list(pool.map(_length, paths))
        return self._lengths

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        frames, _ = load_video(item.path)
        pixels = frames_to_tensor(frames, self.image_size, self.resize)
        if self.hflip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        sample = {
            "pixels": pixels,
            "target": torch.tensor(item.target, dtype=torch.float32),
            "mos_raw": torch.tensor(item.mos_raw, dtype=torch.float32),
            "image_id": item.image_id,
        }
        if item.target_std is not None:
            sample["target_std"] = torch.tensor(item.target_std, dtype=torch.float32)
        return sample


def video_problem(path: str | os.PathLike, level: str = "full") -> str:
    """Why ``path`` cannot be used as a video (``""`` when it can): ``"header"`` opens it and
    counts its frames (:func:`probe_video`), ``"full"`` also decodes every frame it keeps
    (:func:`load_video`)."""
    path = Path(path)
    if not path.is_file():
        return "it is a directory, not a file" if path.is_dir() else "file does not exist"
    try:
        if path.stat().st_size == 0:
            return "file is empty (0 bytes)"
        if level == "header":
            probe_video(path)
        else:
            load_video(path)
    except ImageLoadError as err:
        return err.reason or str(err)
    return ""


def find_bad_videos(
    records: Sequence[ImageRecord],
    on_bad_image: str,
    level: str = "off",
    workers: int = 4,
    name: str = "dataset",
) -> list[tuple[str, str, str]]:
    """Check the records' videos as ``on_bad_image`` and ``level`` say (the videos' side of
    :func:`~iqa_lightning.data.checks.find_bad_images`).

    Missing files are always found. ``level="header"`` probes every video, ``"full"`` decodes
    its kept frames; ``on_bad_image="skip"`` with ``level="off"`` decodes them too, to know what
    to skip. Checks run on ``workers`` threads.

    Returns:
        ``(image_id, path, reason)`` of the videos to skip (empty in ``error`` mode).

    Raises:
        FileNotFoundError: ``error`` mode and video files are missing (and no other is bad).
        ImageCheckError: ``error`` mode and videos cannot be read; one line per file.
    """
    if level not in CHECK_LEVELS:
        raise ValueError(f"dataset.check_images must be one of {list(CHECK_LEVELS)}, got {level!r}")
    reasons = {r.image_id: "file does not exist" for r in records if not Path(r.path).is_file()}
    missing = len(reasons)
    if level != "off" or on_bad_image == "skip":
        present = [r for r in records if r.image_id not in reasons]
        depth = "full" if level == "off" else level
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            found = pool.map(lambda r: video_problem(r.path, depth), present)
            reasons.update((r.image_id, why) for r, why in zip(present, found, strict=True) if why)
    return report_bad_files(
        records, reasons, missing, on_bad_image, name, "video", "cannot be read"
    )


class VideoDataModule(IQADataModule):
    """Base of the labelled video datasets: records are videos, batches carry ``pixels``
    ``[B, frames, 3, S, S]`` of videos with equal frame counts (:class:`SameLengthBatches`).

    Subclasses declare ``spec`` (:class:`~iqa_lightning.data.spec.DatasetSpec`; its
    ``settings`` are the dataset's own config keys, kept as attributes of their names) and
    implement :meth:`read_records`. Everything else is :class:`~.base.IQADataModule`'s, except:
    ``check_images`` ``header`` probes each video and ``full`` decodes its kept frames;
    ``dataset.cache`` (a store of resized images), ``sampler=pairs``, ``target=histogram`` and
    ``native_size`` do not apply to videos and are refused.

    Args:
        **kwargs: The dataset's own settings (``spec.settings``) and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.
    """

    def __init__(self, **kwargs) -> None:
        own = {key: kwargs.pop(key, default) for key, default in self.spec.settings.items()}
        for key, reason in (
            ("cache", "videos are decoded each time; set dataset.cache=false"),
            ("sampler", "videos are batched by frame count; use dataset.sampler=shuffle"),
            ("target", "video datasets give no rating histogram; use dataset.target=mos"),
            ("native_size", "frames are read at the square; set dataset.native_size=false"),
        ):
            value = kwargs.get(key)
            if value not in (None, False, "shuffle", "mos"):
                title = self.spec.title or self.spec.name
                raise ValueError(f"{title}: dataset.{key}={value} does not apply: {reason}")
        super().__init__(**kwargs)
        for key, value in own.items():
            setattr(self, key, value)
        self._lengths: dict[str, int] = {}

    def find_bad_images(self, records: Sequence[ImageRecord]) -> list[tuple[str, str, str]]:
        """``(image_id, path, reason)`` of the videos to skip (:func:`find_bad_videos`)."""
        workers = check_workers(self.num_workers)
        return find_bad_videos(records, self.on_bad_image, self.check_images, workers, self.name)

    def dataset(self, split: str) -> LabelledVideos:
        """The videos of one split, or of every video for ``"all"`` (flips only in train)."""
        base = super().dataset(split)
        items = base.items
        known = [self._lengths.get(item.image_id) for item in items]
        dataset = LabelledVideos(
            items,
            self.image_size,
            hflip=base.hflip,
            resize=self.resize,
            lengths=None if None in known else known,
        )
        lengths = dataset.lengths(check_workers(self.num_workers))
        self._lengths.update((item.image_id, n) for item, n in zip(items, lengths, strict=True))
        return dataset

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader("train", self.batch_size, shuffle=True, generator=generator)

    def _loader(self, split, batch_size, shuffle, generator=None) -> DataLoader:
        dataset = self.dataset(split)
        batches = SameLengthBatches(
            dataset.lengths(), batch_size, generator=generator if shuffle else None
        )
        return make_loader(dataset, 1, self.num_workers, batch_sampler=batches)
