"""Checking every image of a dataset before training (``dataset.check_images``).

Levels:

- ``off``: only that every file exists (``on_bad_image=error``); ``on_bad_image=skip`` decodes
  every image anyway, as it always has, to know what to skip.
- ``header``: PIL opens each file and runs ``Image.verify()``: finds missing, empty and
  non-image files, broken headers and (for PNG) chunk checksum errors, without decoding the
  pixels. It does not find truncated or corrupt JPEG data: JPEG has no cheap check.
- ``full``: each image is decoded exactly as training decodes it
  (:func:`~iqa_lightning.data.images.load_rgb`), which finds everything that would stop a run,
  including a truncated JPEG whose header is fine.

The files are checked on a thread pool (PIL decodes outside the GIL). With
``on_bad_image=error`` every bad file is listed in one :class:`ImageCheckError`; with
``skip`` they are skipped and counted. The results are kept in a small JSON file in the cache
folder (``<cache_dir>/image_checks/``), one entry per image keyed by its absolute path, byte size
and modification time (``st_mtime_ns``), so a second run reads the verdicts instead of decoding
again; an image that is replaced or edited is checked again. A change of Pillow or of
:data:`CHECK_VERSION` discards the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import PIL
from PIL import Image

from iqa_lightning.errors import ImageLoadError
from iqa_lightning.progress import Progress

from .images import describe_error, image_problem
from .records import ImageRecord

__all__ = [
    "CHECK_LEVELS",
    "CHECK_VERSION",
    "ImageCheckError",
    "check_cache_file",
    "check_image_files",
    "check_workers",
    "find_bad_images",
    "header_problem",
    "warn_skipped",
]

logger = logging.getLogger("iqa_lightning.data")

CHECK_LEVELS = ("off", "header", "full")
# Bump when a verdict could change for the same file (the checks or the decode rules).
CHECK_VERSION = 1
_MISSING = "file does not exist"
_SHOW_AT_MOST = 5


class ImageCheckError(ImageLoadError):
    """Images of a dataset cannot be used; the message lists every file and why.

    Attributes:
        problems: ``(path, reason)`` of every bad file.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = [(str(path), str(reason)) for path, reason in problems]

    def __reduce__(self):
        return (type(self), (str(self), self.problems))


def header_problem(path: str | os.PathLike) -> str:
    """Why PIL cannot open and verify ``path`` (without decoding the pixels), or ``""``."""
    path = Path(path)
    if not path.is_file():
        return "it is a directory, not a file" if path.is_dir() else _MISSING
    try:
        if path.stat().st_size == 0:
            return "file is empty (0 bytes)"
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # any reader failure is a verdict, naming the error
        return describe_error(err)
    return ""


def check_workers(num_workers: int) -> int:
    """Threads for a check: ``dataset.num_workers``, but at least ``min(8, CPUs)``."""
    return max(1, int(num_workers), min(8, os.cpu_count() or 1))


def check_image_files(
    paths: Sequence[str | os.PathLike],
    level: str = "full",
    cache_file: str | os.PathLike | None = None,
    workers: int = 4,
) -> list[str]:
    """The problem of each file (``""`` when it is fine), checked in parallel.

    Args:
        paths: Image files.
        level: ``"header"`` (:func:`header_problem`) or ``"full"`` (a full decode).
        cache_file: JSON file of earlier verdicts to reuse and update; None: no cache.
        workers: Threads.

    Returns:
        One reason per path, in order.
    """
    if level not in ("header", "full"):
        raise ValueError(f"check level must be 'header' or 'full', got {level!r}")
    check = image_problem if level == "full" else header_problem
    keys = [_stat_key(path) for path in paths]
    cached = _load_cache(cache_file, level) if cache_file is not None else {}
    reasons: list[str | None] = []
    for path, key in zip(paths, keys, strict=True):
        entry = cached.get(os.path.abspath(os.fspath(path)))
        if key is None:
            reasons.append(None)  # cannot be stat-ed: let the check say why
        elif entry is not None and entry[:2] == list(key):
            reasons.append(entry[2])
        else:
            reasons.append(None)
    todo = [i for i, reason in enumerate(reasons) if reason is None]
    start = time.perf_counter()
    if todo:
        # progress lines (rate, ETA) at most every 30 s; the summary below is the final line
        progress = Progress(f"image check ({level})", total=len(todo), unit="files",
                            logger=logger, final=False)  # fmt: skip
        with progress, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, reason in zip(todo, pool.map(check, [paths[i] for i in todo]), strict=True):
                reasons[i] = reason
                progress.update()
    if cache_file is not None and todo:
        entries = {
            os.path.abspath(os.fspath(path)): [*key, reason]
            for path, key, reason in zip(paths, keys, reasons, strict=True)
            if key is not None
        }
        _save_cache(Path(cache_file), level, entries)
    logger.info(
        "image check (%s): %d file(s), %d checked now on %d thread(s) in %.1f s, %d from the "
        "cache, %d bad",
        level,
        len(paths),
        len(todo),
        max(1, workers),
        time.perf_counter() - start,
        len(paths) - len(todo),
        sum(bool(reason) for reason in reasons),
    )
    return [str(reason) for reason in reasons]


def find_bad_images(
    records: Sequence[ImageRecord],
    on_bad_image: str,
    level: str = "off",
    cache_file: str | os.PathLike | None = None,
    workers: int = 4,
    name: str = "dataset",
) -> list[tuple[str, str, str]]:
    """Check the records' images as ``on_bad_image`` and ``level`` say.

    Args:
        records: The dataset's records.
        on_bad_image: ``"error"`` or ``"skip"``.
        level: One of :data:`CHECK_LEVELS`.
        cache_file: JSON file of earlier verdicts (see :func:`check_image_files`).
        workers: Threads.
        name: The dataset's name, for messages.

    Returns:
        ``(image_id, path, reason)`` of the images to skip (empty in ``error`` mode).

    Raises:
        FileNotFoundError: ``error`` mode and image files are missing (and no other is bad).
        ImageCheckError: ``error`` mode, ``level`` not ``off``, and images cannot be used; the
            message lists every one.
    """
    if level not in CHECK_LEVELS:
        raise ValueError(f"dataset.check_images must be one of {list(CHECK_LEVELS)}, got {level!r}")
    missing = {r.image_id for r in records if not Path(r.path).is_file()}
    reasons = dict.fromkeys(missing, _MISSING)
    if level != "off" or on_bad_image == "skip":
        present = [r for r in records if r.image_id not in missing]
        found = check_image_files(
            [r.path for r in present],
            "full" if level == "off" else level,
            cache_file,
            workers,
        )
        reasons.update((r.image_id, why) for r, why in zip(present, found, strict=True) if why)
    problem = f"cannot be used (dataset.check_images={level})"
    return report_bad_files(records, reasons, len(missing), on_bad_image, name, "image", problem)


def report_bad_files(
    records: Sequence[Any],
    reasons: dict[str, str],
    missing: int,
    on_bad_image: str,
    name: str,
    what: str,
    problem: str,
) -> list[tuple[str, str, str]]:
    """What ``on_bad_image`` makes of the bad files found (images or videos).

    Args:
        records: The dataset's records (``image_id``, ``path``).
        reasons: Why each bad record's file cannot be used, by id.
        missing: How many of them are missing files.
        on_bad_image: ``"error"`` or ``"skip"``.
        name: The dataset's name, for messages.
        what: ``"image"`` or ``"video"``.
        problem: What the error says of unusable files (``cannot be read``).

    Returns:
        ``(image_id, path, reason)`` of the files to skip (empty in ``error`` mode).

    Raises:
        FileNotFoundError: ``error`` mode and the only bad files are missing ones.
        ImageCheckError: ``error`` mode and some file cannot be used; one line per file.
    """
    bad = [(r.image_id, str(r.path), reasons[r.image_id]) for r in records if r.image_id in reasons]
    if on_bad_image == "skip":
        if bad:
            warn_skipped(name, f"{what}(s)", bad, len(records))
        return bad
    if bad and len(bad) == missing:
        shown = "\n  ".join(path for _, path, _ in bad[:_SHOW_AT_MOST])
        more = f"\n  ... and {len(bad) - _SHOW_AT_MOST} more" if len(bad) > _SHOW_AT_MOST else ""
        raise FileNotFoundError(
            f"{name}: {len(bad)} of {len(records)} {what} file(s) listed in the annotations are "
            f"missing:\n  {shown}{more}\nRestore them, or set dataset.on_bad_image=skip to drop "
            "them"
        )
    if bad:
        listed = "\n  ".join(f"{path}: {why}" for _, path, why in bad)
        raise ImageCheckError(
            f"{name}: {len(bad)} of {len(records)} {what}(s) {problem}:\n  {listed}\nFix or "
            "remove them, or set dataset.on_bad_image=skip to drop them",
            [(path, why) for _, path, why in bad],
        )
    return []


def warn_skipped(where, what: str, skipped: Sequence[tuple[str, str, str]], total: int) -> None:
    """Log that ``on_bad_image=skip`` dropped ``skipped`` (``(id, path, reason)`` each) of
    ``total`` ``what``, naming the first one's path and reason.

    Args:
        where: The dataset's name or the annotation file.
        what: What was counted, e.g. ``"image(s)"``.
        skipped: The dropped ones (at least one).
        total: How many there were.
    """
    logger.warning(
        "%s: skipped %d of %d %s (on_bad_image=skip); first: %s - %s",
        where,
        len(skipped),
        total,
        what,
        skipped[0][1],
        skipped[0][2],
    )


def check_cache_file(
    cache_dir: str | os.PathLike, name: str, root: str | os.PathLike | None, level: str
) -> Path:
    """The verdict file of one dataset (name and root) and level under ``cache_dir``."""
    where = os.path.abspath(os.fspath(root)) if root is not None else ""
    digest = hashlib.blake2b(where.encode(), digest_size=8).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "dataset"
    return (
        Path(os.path.expanduser(str(cache_dir))) / "image_checks" / f"{safe}-{level}-{digest}.json"
    )


def _stat_key(path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def _settings(level: str) -> dict:
    return {"version": CHECK_VERSION, "pillow": PIL.__version__, "level": level}


def _load_cache(path, level: str) -> dict[str, list]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable image check cache '%s': %s", path, err)
        return {}
    if not isinstance(data, dict) or data.get("settings") != _settings(level):
        return {}
    images = data.get("images")
    return images if isinstance(images, dict) else {}


def _save_cache(path: Path, level: str, entries: dict[str, list]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"settings": _settings(level), "images": entries}))
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        logger.warning("cannot write the image check cache '%s': %s", path, err)
