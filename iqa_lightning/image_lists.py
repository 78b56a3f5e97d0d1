"""What ``images=`` of ``python -m iqa_lightning.score`` names: a folder (every file below it
with an image extension), one image file, or a list (a CSV with a header, a JSON list of paths
or of objects, a text file with one path per line); see :mod:`iqa_lightning.score`.

A folder's entries with an image extension that are no readable file (a dangling symlink, a
FIFO, a sub-folder that cannot be listed) are kept in :attr:`ImageList.skipped` with the reason,
so scoring reports them instead of dropping them.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iqa_lightning.data.datasets.table import IMAGE_KEYS as TABLE_IMAGE_KEYS
from iqa_lightning.data.datasets.table import SCORE_KEYS as TABLE_SCORE_KEYS
from iqa_lightning.errors import ConfigError

LIST_SUFFIXES = (".csv", ".json", ".txt")
# The keys dataset=table detects (Q-Align / DeQA-Score lists, label CSVs), then plain path names.
IMAGE_KEYS = (*TABLE_IMAGE_KEYS, "image_path", "path", "file", "file_name", "image_id")
MOS_KEYS = TABLE_SCORE_KEYS


def image_suffixes() -> set[str]:
    """File extensions PIL can open (``.jpg``, ``.png``, ``.bmp``, ``.tif``, ...)."""
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


@dataclass
class ImageList:
    """What ``images=`` names: paths to read, their names in the output, and MOS if any.

    ``skipped`` holds ``(name, reason)`` of a folder's entries with an image extension that are
    no readable file (a dangling symlink, a FIFO, an entry that cannot be read), in folder
    order; they are reported with the images that cannot be decoded.
    """

    paths: list[Path]
    names: list[str]
    mos: list[float] | None = None
    mos_key: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _find_key(keys: list[str], wanted: str, candidates: tuple[str, ...], what: str, where: str):
    """The key of ``keys`` that is ``wanted``, or with ``wanted="auto"`` the first candidate
    present (any case); None when auto finds none."""
    if wanted != "auto":
        if wanted not in keys:
            raise ConfigError(f"{where}: no {what} {wanted!r}; it has {keys}")
        return wanted
    lower = {k.lower(): k for k in keys}
    return next((lower[c] for c in candidates if c in lower), None)


def _mos_wanted(mos_key: str | None) -> str | None:
    return None if mos_key is None or str(mos_key).lower() in ("none", "null", "") else mos_key


def read_csv_list(path: Path, image_key: str, mos_key: str | None) -> tuple[list, list, str]:
    """(image entries, MOS values or None, MOS column) of a CSV list with a header."""
    from iqa_lightning.data import read_annotation_csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        header = [cell.strip() for cell in next(csv.reader(f), [])]
    if not header:
        raise ConfigError(f"images={path}: the CSV list is empty; it needs a header row")
    column = _find_key(header, image_key, IMAGE_KEYS, "image column", f"images={path}")
    if column is None:
        raise ConfigError(
            f"images={path}: no image column among {header}; name it with image_key=<column> "
            f"(looked for {list(IMAGE_KEYS)})"
        )
    wanted = _mos_wanted(mos_key)
    mos_col = wanted and _find_key(header, wanted, MOS_KEYS, "MOS column", f"images={path}")
    numeric = [mos_col] if mos_col else []
    _, rows = read_annotation_csv(path, required=[column], numeric=numeric, unique=column)
    mos = [row.numbers[mos_col] for row in rows] if mos_col else None
    return [row[column] for row in rows], mos, mos_col


def read_json_list(path: Path, image_key: str, mos_key: str | None) -> tuple[list, list, str]:
    """(image entries, MOS values or None, MOS key) of a JSON list of paths or of objects."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"images={path}: not valid JSON ({err})") from err
    if not isinstance(items, list) or not items:
        raise ConfigError(f"images={path}: expected a non-empty JSON list of paths or objects")
    if all(isinstance(item, str) for item in items):
        return items, None, None
    if not all(isinstance(item, dict) for item in items):
        bad = next(i for i, x in enumerate(items) if not isinstance(x, dict))
        raise ConfigError(f"images={path}, item {bad}: expected an object like the first item")
    keys = list(items[0])
    where = f"images={path}, item 0"
    key = _find_key(keys, image_key, IMAGE_KEYS, "image key", where)
    if key is None:
        raise ConfigError(f"{where}: no image key among {keys}; name it with image_key=<key>")
    wanted = _mos_wanted(mos_key)
    mos_k = wanted and _find_key(keys, wanted, MOS_KEYS, "MOS key", where)
    entries, mos = [], []
    for i, item in enumerate(items):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise ConfigError(f"images={path}, item {i}: no {key!r} path")
        entries.append(item[key])
        if mos_k:
            mos.append(_json_number(item.get(mos_k), f"images={path}, item {i}: {mos_k}"))
    return entries, (mos if mos_k else None), mos_k


def read_list(
    path: Path, image_key: str | None, mos_key: str | None
) -> tuple[list[str], list[float] | None, str | None]:
    """The entries of a list file (``.csv`` / ``.json`` with their columns, else one path a
    line, ``#`` comments skipped), their MOS where the list has a MOS column, and its name."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv_list(path, image_key, mos_key)
    if suffix == ".json":
        return read_json_list(path, image_key, mos_key)
    lines = path.read_text(encoding="utf-8").splitlines()
    return [x.strip() for x in lines if x.strip() and not x.startswith("#")], None, None


def _json_number(value: Any, where: str) -> float:
    """A finite score from a JSON number or numeric text (Q-Align writes both)."""
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number):
        raise ConfigError(f"{where}={value!r} is not a number")
    return number


def read_images(spec: Any, image_root: Any = None, image_key: str = "auto",
                mos_key: str | None = "auto") -> ImageList:  # fmt: skip
    """The images ``images=`` names (see the module docstring).

    Raises:
        FileNotFoundError: ``spec`` does not exist.
        ConfigError: An empty folder, an unknown file type, or a list without an image column;
            list errors name the file and the line or item.
    """
    path = Path(str(spec)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"images={spec}: no such file or folder")
    suffixes = image_suffixes()
    if path.is_dir():
        files, skipped = list_folder(path, suffixes)
        if not files and skipped:
            shown = "; ".join(f"{name} ({why})" for name, why in skipped[:5])
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            raise ConfigError(
                f"images={spec}: none of the {len(skipped)} image entries can be read: "
                f"{shown}{more}"
            )
        if not files:
            raise ConfigError(f"images={spec}: no image files in the folder or below it")
        return ImageList(files, [p.relative_to(path).as_posix() for p in files], skipped=skipped)
    suffix = path.suffix.lower()
    if suffix not in LIST_SUFFIXES:
        if suffix not in suffixes:
            raise ConfigError(
                f"images={spec}: not a folder, an image file or a list ({', '.join(LIST_SUFFIXES)})"
            )
        return ImageList([path], [str(spec)])
    entries, mos, key = read_list(path, image_key, mos_key)
    if not entries:
        raise ConfigError(f"images={spec}: the list has no paths")
    root = Path(str(image_root)).expanduser() if image_root else path.parent
    paths = [
        Path(e).expanduser() if Path(e).expanduser().is_absolute() else root / e for e in entries
    ]
    return ImageList(paths, [str(e) for e in entries], mos, key)


def list_folder(folder: Path, suffixes: set[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files in ``folder`` and below it (symlinked folders are not entered), sorted,
    and ``(name, reason)`` of each entry with an image extension that is no readable file, and
    of each sub-folder that cannot be listed (names relative to ``folder``)."""
    files, skipped = [], []
    unlisted: list[OSError] = []
    for root, _, names in os.walk(folder, onerror=unlisted.append):
        for name in names:
            entry = Path(root) / name
            if entry.suffix.lower() not in suffixes:
                continue
            problem = entry_problem(entry)
            if problem is None:
                files.append(entry)
            elif problem:
                skipped.append((entry, problem))
    for err in unlisted:
        if err.filename and Path(err.filename) != folder:
            why = f"a folder that cannot be listed ({err.strerror or err})"
            skipped.append((Path(err.filename), why))
    skipped.sort(key=lambda item: item[0])
    return sorted(files), [(p.relative_to(folder).as_posix(), why) for p, why in skipped]


def entry_problem(entry: Path) -> str | None:
    """Why a folder entry is no image file to read (None: a regular file, following symlinks;
    ``""``: a folder, not listed as a problem)."""
    try:
        info = entry.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop"
        if entry.is_symlink() and isinstance(err, FileNotFoundError):
            try:
                return f"dangling symlink to {os.readlink(entry)}"
            except OSError:
                return "dangling symlink"
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISDIR(info.st_mode):
        return ""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return None
