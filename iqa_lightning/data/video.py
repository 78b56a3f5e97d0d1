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
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from iqa_lightning.errors import ConfigError, ImageLoadError

from .images import array_to_tensor, resize_to_array

__all__ = [
    "VIDEO_SUFFIXES",
    "SameLengthBatches",
    "VideoInputs",
    "frame_indices",
    "load_video",
    "probe_video",
    "video_error",
]

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
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, order: Sequence[int] | None = None
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)
        self.order = None if order is None else list(order)

    def _batches(self) -> list[list[int]]:
        groups: dict[int, list[int]] = {}
        order = range(len(self.lengths)) if self.order is None else self.order
        for index in order:
            groups.setdefault(self.lengths[index], []).append(index)
        size = self.batch_size
        return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())

