"""Optional preprocessing cache: each image decoded and resized once, then read back as uint8.

Decoding a 1024x768 JPEG and resizing it costs about 10 ms; reading the resized pixels back
costs about 0.1 ms. With ``dataset.cache=true`` the first epoch fills the cache and later epochs
(and later runs) read from it. Random flips stay on the fly, after the cache.

Key. An entry is named by a hash of the image's absolute path, size and modification time
(``st_mtime_ns``), the output size, the interpolation, the Pillow version and
:data:`CACHE_VERSION`. Change any of them and the entry is rebuilt; stale entries are simply no
longer read. A file's stat is read on every access (about 1 us) instead of hashing its content,
which would read every source file in full each epoch: the very I/O the cache is there to
avoid. The price: an edit that keeps both the byte size and the modification time (``touch
-r``, or a filesystem with coarse timestamps) is not seen; delete the cache folder then.

Format. One file per image, ``<cache_dir>/<size>px-<interpolation>/<ab>/<hash>.npy``: a
standard ``.npy`` header, the ``[size, size, 3]`` uint8 pixels, and a 4-byte CRC-32 of the
pixels (``np.load`` reads the file and ignores the trailer). A read is one ``readinto`` of a
known length plus the CRC, about 0.05 ms at 224 px. One memory-mapped array per split was
faster still (0.01 ms) but both are noise next to a decode, and per-image files let any process
fill any entry independently, invalidate images one by one and survive partial builds.

Concurrency. An entry is written to a uniquely named temporary file in the same folder and
renamed over the final name (``os.replace``, atomic on POSIX), so a reader sees either no entry
or a complete one, never a torn one. Two processes (DDP ranks, DataLoader workers) building the
same entry write identical bytes; the last rename wins. A truncated, foreign or bit-flipped
entry fails the length, header or CRC check, is logged and rebuilt. If the cache folder cannot
be written, a warning names it and the images are served uncached.

Progress. While the cache fills (the first epoch), each process logs at most every 30 s how
many entries it has written and how fast (``image cache 224px-bicubic: 1200 new entries,
31/s``; ``IQA_PROGRESS_SECONDS`` sets the interval).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import stat
import zlib
from pathlib import Path

import numpy as np
import PIL
import torch

from iqa_lightning.progress import Progress

from .images import INTERPOLATIONS, array_to_tensor, check_resize, load_rgb, resize_to_array

__all__ = ["CACHE_VERSION", "ImageCache", "default_cache_dir", "make_image_cache"]

logger = logging.getLogger("iqa_lightning.data")

# Bump when the pixels of an entry would change for the same inputs (decode rules in
# images.py, the resize, the file format).
CACHE_VERSION = 1
_CRC_BYTES = 4


def default_cache_dir() -> Path:
    """Where the cache goes when ``dataset.cache_dir`` is not set.

    Mirrors ``conf/paths/default.yaml``: ``$IQA_CACHE_DIR/preprocessed`` when that variable is
    set, else ``$IQA_ROOT/.cache/preprocessed`` (``IQA_ROOT`` defaults to the working directory).
    """
    base = os.environ.get("IQA_CACHE_DIR") or os.path.join(
        os.environ.get("IQA_ROOT", "."), ".cache"
    )
    return Path(os.path.expanduser(base)) / "preprocessed"


def make_image_cache(
    cache: bool, cache_dir: str | os.PathLike | None, image_size: int, resize: str = "squash"
) -> ImageCache | None:
    """Build the cache a data module asked for, checking the config values.

    Args:
        cache: The ``dataset.cache`` flag.
        cache_dir: The ``dataset.cache_dir`` folder; ``None`` uses :func:`default_cache_dir`.
        image_size: Side of the stored images.
        resize: The ``dataset.resize`` mode.

    Returns:
        An :class:`ImageCache`, or ``None`` when ``cache`` is false.

    Raises:
        ValueError: ``cache`` is not a boolean or ``cache_dir`` is empty.
    """
    if not isinstance(cache, (bool, np.bool_)):
        raise ValueError(f"dataset.cache must be true or false, got {cache!r}")
    if not cache:
        return None
    if cache_dir is not None and not str(cache_dir).strip():
        raise ValueError("dataset.cache_dir must be a folder path, got an empty string")
    folder = default_cache_dir() if cache_dir is None else cache_dir
    return ImageCache(folder, image_size, resize=resize)


class ImageCache:
    """Resized uint8 images on disk, keyed by source file and preprocessing settings.

    Creating the object does no I/O, so it pickles cheaply into DataLoader workers; folders are
    made on the first write.

    Args:
        cache_dir: Root folder of the cache (config key ``dataset.cache_dir``).
        image_size: Output height and width.
        interpolation: Resize filter, a key of :data:`~iqa_lightning.data.images.INTERPOLATIONS`.
        resize: How images become square, a key of :data:`~iqa_lightning.data.images.RESIZES`.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        image_size: int,
        interpolation: str = "bicubic",
        resize: str = "squash",
    ):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}"
            )
        if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image size must be a positive integer, got {image_size!r}")
        self.root = Path(os.path.expanduser(str(cache_dir)))
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.resize = check_resize(resize)
        suffix = "" if resize == "squash" else f"-{resize}"
        self.folder = self.root / f"{self.image_size}px-{interpolation}{suffix}"
        self._header = _npy_header(self.image_size)
        self._settings = {
            "version": CACHE_VERSION,
            "size": self.image_size,
            "interpolation": interpolation,
            **({} if resize == "squash" else {"resize": resize}),
            "pillow": PIL.__version__,
        }
        self._warned_write = False
        self._filled: Progress | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_filled"] = None  # each process counts the entries it writes itself
        return state

    def __repr__(self) -> str:
        return f"ImageCache('{self.folder}')"

    def load(self, path: str | os.PathLike) -> torch.Tensor:
        """The image as a float32 ``[3, S, S]`` tensor in [0, 1], from the cache if possible.

        Identical, bit for bit, to ``image_to_tensor(load_rgb(path), S, interpolation, resize)``.

        Raises:
            ImageLoadError: The source image is missing or cannot be decoded (same message as
                the uncached path).
        """
        return array_to_tensor(self.load_array(path))

    def load_array(self, path: str | os.PathLike) -> np.ndarray:
        """The image as ``[S, S, 3]`` uint8 pixels; decoded and stored on a cache miss."""
        entry = self.entry_path(path)
        if entry is None:  # the source cannot be stat-ed: let the decoder name the problem
            return self._compute(path)
        try:
            pixels = self._read(entry)
        except _CorruptEntryError as err:
            logger.warning("rebuilding corrupt cache entry '%s' of '%s': %s", entry, path, err)
            pixels = None
        if pixels is None:
            pixels = self._compute(path)
            if self._write(entry, pixels):
                self._count_filled()
        return pixels

    def _count_filled(self) -> None:
        """One more entry written by this process (logged at most every 30 s)."""
        if self._filled is None:
            from torch.utils.data import get_worker_info

            worker = get_worker_info()
            where = f" (worker {worker.id})" if worker is not None else ""
            self._filled = Progress(f"image cache {self.folder.name}{where}", unit="new entries",
                                    bar=False, logger=logger, final=False, ambient=False)  # fmt: skip
        self._filled.update()

    def entry_path(self, path: str | os.PathLike) -> Path | None:
        """Where the entry of ``path`` is stored; ``None`` when the source is not a readable
        regular file."""
        source = os.path.abspath(os.fspath(path))
        try:
            info = os.stat(source)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        key = {**self._settings, "path": source, "bytes": info.st_size, "mtime": info.st_mtime_ns}
        digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16)
        name = digest.hexdigest()
        return self.folder / name[:2] / f"{name}.npy"

    def _compute(self, path: str | os.PathLike) -> np.ndarray:
        return resize_to_array(load_rgb(path), self.image_size, self.interpolation, self.resize)

    def _read(self, entry: Path) -> np.ndarray | None:
        header_len = len(self._header)
        count = self.image_size * self.image_size * 3
        expected = header_len + count + _CRC_BYTES
        buffer = bytearray(expected + 1)  # one spare byte reveals a too-long file
        try:
            with open(entry, "rb") as handle:
                got = handle.readinto(buffer)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise _CorruptEntryError(f"cannot read it ({err})") from err
        if got != expected:
            raise _CorruptEntryError(f"{got} bytes, expected {expected}")
        view = memoryview(buffer)
        if view[:header_len] != self._header:
            raise _CorruptEntryError("unexpected .npy header")
        stored = int.from_bytes(view[header_len + count : expected], "little")
        if zlib.crc32(view[header_len : header_len + count]) != stored:
            raise _CorruptEntryError("checksum mismatch")
        pixels = np.frombuffer(buffer, dtype=np.uint8, count=count, offset=header_len)
        return pixels.reshape(self.image_size, self.image_size, 3)

    def _write(self, entry: Path, pixels: np.ndarray) -> bool:
        """Store ``pixels`` as ``entry``; False when it cannot be written."""
        data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
        crc = zlib.crc32(data).to_bytes(_CRC_BYTES, "little")
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: the name is ours alone; mode 0o666 lets the umask decide who may read
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._header + data + crc)
            os.replace(tmp, entry)
            return True
        except OSError as err:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if not self._warned_write:
                self._warned_write = True
                logger.warning(
                    "cannot write the image cache under '%s' (dataset.cache_dir): %s; "
                    "images this process cannot store are decoded every time",
                    self.root,
                    err,
                )
            return False


class _CorruptEntryError(Exception):
    """A cache entry exists but does not hold valid pixels."""


def _npy_header(size: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|u1", "fortran_order": False, "shape": (size, size, 3)}
    )
    return buffer.getvalue()
