"""Image decoding: any file PIL can read becomes an 8-bit RGB image, or a clear error.

Every dataset goes through :func:`load_rgb`, so the rules for odd files live in one place:
EXIF orientation is applied, transparency is composited on white, palette / CMYK / grayscale
images are converted, and high-bit-depth grayscale is rescaled by its bit depth instead of
being clipped (PIL's plain ``convert`` maps every 16-bit value above 255 to white).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import default_collate, get_worker_info

from iqa_lightning.errors import ImageLoadError
from iqa_lightning.preprocessing import PAD_COLOR, PAD_COLORS, RESIZES, check_resize

__all__ = [
    "INTERPOLATIONS",
    "LIST_KEYS",
    "RESIZES",
    "check_resize",
    "pad_square",
    "ImageLoadError",
    "array_to_tensor",
    "collate_samples",
    "describe_error",
    "flip_left_right",
    "image_problem",
    "image_problems",
    "image_to_tensor",
    "load_rgb",
    "resize_to_array",
    "to_rgb",
]

logger = logging.getLogger("iqa_lightning.data")

_WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32B", "F"}
_TIFF_BITS_PER_SAMPLE = 258

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Read an image file as a fully decoded 8-bit RGB image.

    Applies the EXIF orientation, composites transparency on white, converts palette, CMYK,
    grayscale and 1-bit images, and rescales 16-bit / 32-bit integer and float grayscale by
    their bit depth (see :func:`to_rgb`).

    Args:
        path: Image file.

    Returns:
        A PIL image in mode ``"RGB"``, detached from the file.

    Raises:
        ImageLoadError: The file is missing, empty, not an image, truncated, cannot be decoded,
            or has a mode that cannot be converted. The message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        reason = "it is a directory, not a file" if path.is_dir() else "file does not exist"
        raise ImageLoadError.for_path(path, reason)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageLoadError.for_path(path, f"cannot stat file ({err})") from err
    if size == 0:
        raise ImageLoadError.for_path(path, "file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()
            declared_bits = _declared_bits(img)
            img = _apply_orientation(img)
            if img.mode == "RGB" and "transparency" not in img.info:
                return img  # decoded pixels live in memory; the file closes on exit
            return to_rgb(img, declared_bits=declared_bits)
    except ImageLoadError as err:
        raise ImageLoadError.for_path(path, err.reason or str(err)) from err
    except Exception as err:  # any decoder failure must name the file
        raise ImageLoadError.for_path(path, describe_error(err)) from err


def to_rgb(img: Image.Image, declared_bits: int | None = None) -> Image.Image:
    """Convert an in-memory image of any PIL mode to 8-bit RGB.

    Rules:
        - ``RGB`` is returned as a copy; ``L`` and ``1`` are replicated to three channels.
        - Alpha (``RGBA``, ``LA``, ``PA``, premultiplied modes, and ``P`` / ``L`` / ``RGB`` with
          a ``transparency`` entry) is composited on a white background.
        - ``P`` uses its palette; ``CMYK`` and ``YCbCr`` use PIL's conversion.
        - ``I;16*`` is scaled by its bit depth: ``declared_bits`` when the file states fewer
          bits than the container (e.g. 12-bit TIFF), else 16.
        - ``I`` (32-bit int) uses ``declared_bits`` when it is at most 16, else 16 bits when all
          values lie in [0, 65535], else a min-max stretch.
        - ``F`` is taken as [0, 1] when all values lie there, as [0, 255] when they lie there,
          else min-max stretched.

    Args:
        img: Decoded image.
        declared_bits: Bits per sample stated by the file, if any.

    Returns:
        A new image in mode ``"RGB"``.

    Raises:
        ImageLoadError: The mode cannot be converted to RGB (no path is known here).
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(img, declared_bits)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_on_white(img)
    if mode == "1":
        return img.convert("L").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageLoadError(
            f"image mode {mode!r} cannot be converted to RGB ({err})",
            reason=f"image mode {mode!r} cannot be converted to RGB ({err})",
        ) from err


def image_to_tensor(
    img: Image.Image, size: int, interpolation: str = "bicubic", resize: str = "squash"
) -> torch.Tensor:
    """Resize an image to ``size`` x ``size`` and make a float tensor.

    The same two steps as the preprocessing cache (:func:`resize_to_array`, then
    :func:`array_to_tensor`), so cached and uncached pixels are identical.

    Args:
        img: PIL image; converted with :func:`to_rgb` when it is not RGB already.
        size: Output height and width in pixels.
        interpolation: A key of :data:`INTERPOLATIONS`.
        resize: A key of :data:`RESIZES`.

    Returns:
        Float32 tensor of shape ``[3, size, size]`` with values in [0, 1].
    """
    return array_to_tensor(resize_to_array(img, size, interpolation, resize))


def resize_to_array(
    img: Image.Image, size: int, interpolation: str = "bicubic", resize: str = "squash"
) -> np.ndarray:
    """Resize an image to ``size`` x ``size`` as 8-bit pixels.

    Args:
        img: PIL image; converted with :func:`to_rgb` when it is not RGB already.
        size: Output height and width in pixels.
        interpolation: A key of :data:`INTERPOLATIONS`.
        resize: A key of :data:`RESIZES`: ``squash``, ``short_side_crop``, ``pad_square`` or
            ``pad_square_siglip``.

    Returns:
        C-contiguous uint8 array of shape ``[size, size, 3]``.
    """
    if size < 1:
        raise ValueError(f"image size must be a positive integer, got {size}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}"
        )
    check_resize(resize)
    if img.mode != "RGB":
        img = to_rgb(img)
    if resize == "short_side_crop":
        img = _short_side_crop(img, size, INTERPOLATIONS[interpolation])
        return np.array(img, dtype=np.uint8)
    if resize in PAD_COLORS:
        img = pad_square(img, PAD_COLORS[resize])
    if img.size != (size, size):
        img = img.resize((size, size), INTERPOLATIONS[interpolation])
    return np.array(img, dtype=np.uint8)


def pad_square(img: Image.Image, color: tuple[int, int, int] = PAD_COLOR) -> Image.Image:
    """Pad the short side to make a square, the image centred (offset rounded down).

    Args:
        img: RGB image.
        color: Fill colour of the padding.
    """
    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    square = Image.new(img.mode, (side, side), color)
    square.paste(img, ((side - width) // 2, (side - height) // 2))
    return square


def _short_side_crop(img: Image.Image, size: int, resample) -> Image.Image:
    width, height = img.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new = (size, new_long) if width <= height else (new_long, size)
    if img.size != new:
        img = img.resize(new, resample)
    left = int(round((new[0] - size) / 2.0))
    top = int(round((new[1] - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Turn ``[H, W, 3]`` uint8 pixels into a float32 ``[3, H, W]`` tensor in [0, 1].

    Args:
        array: uint8 pixels, e.g. from :func:`resize_to_array` or the preprocessing cache.

    Returns:
        A new float32 tensor (it shares no memory with ``array``).
    """
    # Single-threaded numpy, bit-identical to torch's ``.float().div_(255.0)``: torch would run
    # this small op on its intra-op thread pool, which stalls for milliseconds whenever another
    # process holds a core (measured: 14 ms instead of 0.04 ms per 224x224 image on 2 cores).
    planar = np.divide(array.transpose(2, 0, 1), np.float32(255.0), dtype=np.float32)
    return torch.from_numpy(planar)


def flip_left_right(array: np.ndarray) -> np.ndarray:
    """Mirror ``[H, W, C]`` pixels horizontally, as a C-contiguous copy.

    Flipping the uint8 pixels before :func:`array_to_tensor` gives exactly the flipped float
    tensor at a quarter of the memory traffic; ``np.take`` copies whole pixels, where a
    ``[:, ::-1]`` view would make the float conversion 3x slower.
    """
    return np.take(array, np.arange(array.shape[1] - 1, -1, -1), axis=1)


#: Sample keys a batch keeps as Python lists: ``images`` (each image at its own size,
#: ``dataset.native_size``) cannot stack.
LIST_KEYS = ("images",)


def collate_samples(samples: list[dict]) -> dict:
    """``default_collate`` for dict samples, stacking ``pixels`` with numpy in the main process;
    the :data:`LIST_KEYS` (``images`` at their own sizes) stay lists, one entry per sample.

    torch's stack runs on its intra-op thread pool, which stalls whenever another process holds
    a core (on 2 busy cores: 4 ms per image, more than reading a cached image). DataLoader
    workers run torch single-threaded and keep ``default_collate``, which stacks straight into
    the shared memory the batch travels in.

    Args:
        samples: Dataset items, each with a float ``pixels`` tensor of the same shape.

    Returns:
        The batch, keys in the order of the samples' keys.
    """
    lists = {k: [s[k] for s in samples] for k in LIST_KEYS if samples and k in samples[0]}
    if lists:
        batch = collate_samples([{k: v for k, v in s.items() if k not in lists} for s in samples])
        return {key: lists[key] if key in lists else batch[key] for key in samples[0]}
    if get_worker_info() is not None or not samples or "pixels" not in samples[0]:
        return default_collate(samples)
    pixels = np.stack([sample["pixels"].numpy() for sample in samples])
    rest = default_collate([{k: v for k, v in s.items() if k != "pixels"} for s in samples])
    batch = {"pixels": torch.from_numpy(pixels), **rest}
    return {key: batch[key] for key in samples[0]}


def image_problem(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be loaded with :func:`load_rgb` (the error's reason), or ``""``."""
    try:
        load_rgb(path)
    except ImageLoadError as err:
        return err.reason or str(err)
    return ""


def image_problems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """:func:`image_problem` of every path, in order, decoding on up to 8 threads."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(image_problem, paths))


def _composite_on_white(img: Image.Image) -> Image.Image:
    if img.mode == "La":
        img = img.convert("LA")
    elif img.mode == "RGBa":
        img = img.convert("RGBA")
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(img: Image.Image, declared_bits: int | None) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    if values.ndim != 2:
        raise ImageLoadError(
            f"unexpected array shape {values.shape} for mode {img.mode!r}",
            reason=f"unexpected array shape {values.shape} for mode {img.mode!r}",
        )
    if img.mode == "F":
        scaled = _scale_float(values)
    elif img.mode.startswith("I;16"):
        bits = declared_bits if declared_bits and declared_bits < 16 else 16
        scaled = values / float(2**bits - 1)
    else:
        scaled = _scale_int32(values, declared_bits)
    gray = np.clip(np.rint(np.clip(scaled, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")


def _scale_int32(values: np.ndarray, declared_bits: int | None) -> np.ndarray:
    if declared_bits and declared_bits <= 16:
        return values / float(2**declared_bits - 1)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 65535:
        return values / 65535.0
    return _stretch(values)


def _scale_float(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    values = np.nan_to_num(values, nan=0.0, posinf=finite.max(), neginf=finite.min())
    low, high = float(finite.min()), float(finite.max())
    if low >= 0 and high <= 1:
        return values
    if low >= 0 and high <= 255:
        return values / 255.0
    return _stretch(values)


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _apply_orientation(img: Image.Image) -> Image.Image:
    # In place: the copying form duplicates the full-size image even when there is nothing to
    # rotate (about 5% of the decode + resize time of a 1024x768 JPEG).
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # unreadable EXIF must not make a decodable image unusable
        logger.debug("ignoring unreadable EXIF orientation in %s", getattr(img, "filename", "?"))
    return img


def _declared_bits(img: Image.Image) -> int | None:
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(_TIFF_BITS_PER_SAMPLE)
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    try:
        return int(bits) if bits else None
    except (TypeError, ValueError):
        return None


def describe_error(err: BaseException) -> str:
    """``"<ExceptionType>: <message>"`` (the type alone for an empty message)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
