"""Splits read from a label file with a split column (``dataset.split=column``).

Reference code often ships its split as the dataset's label file with one more column, e.g.
``split_kadid10k.csv`` (KADID-10k's ``dist_img,ref_img,dmos,var`` + ``split``) or
``split_agiqa3k.csv`` (AGIQA-3K's ``data.csv`` columns + ``split``), values ``train`` / ``val``
/ ``test``. :func:`split_from_file` gives each record of any dataset the split such a file names.

Rows are matched to records by image name: the values of ``image_column``, or by default of
the column that holds the most of the dataset's image ids (the first such column on ties: for
the files above ``dist_img`` and ``name``). The file must name every image of the dataset
exactly once and nothing else; a mismatch either way is an error that counts the names and
shows a few.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from iqa_lightning.errors import SplitError

from .formats import read_table
from .records import ImageRecord
from .splits import check_non_empty, official_split_name

__all__ = ["DEFAULT_SPLIT_COLUMN", "resolve_split_file", "split_from_file"]

logger = logging.getLogger("iqa_lightning.data")

DEFAULT_SPLIT_COLUMN = "split"
_SHOW_AT_MOST = 5


def resolve_split_file(split_file: str | os.PathLike, root: Path | None) -> Path:
    """The split file: an absolute path, a path from the working directory, or one in ``root``.

    Raises:
        FileNotFoundError: None of these is a file; the message lists where it looked.
    """
    path = Path(os.path.expanduser(str(split_file)))
    looked = [path] if path.is_absolute() or root is None else [path, root / path]
    for candidate in looked:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "split file (dataset.split_file) not found; looked for "
        + ", ".join(f"'{p}'" for p in looked)
    )


def split_from_file(
    records: Sequence[ImageRecord],
    path: str | os.PathLike,
    column: str = DEFAULT_SPLIT_COLUMN,
    image_column: str | None = None,
    name: str = "dataset",
) -> dict[str, str]:
    """Each record's split as a label file with a split column names it.

    Args:
        records: The dataset's records (unique ``image_id``).
        path: CSV (or ``.xlsx``) file with a header row.
        column: The split column; values train / val / test (also training, validation,
            testing, valid, dev; any case).
        image_column: The column of image names; None: the column that matches the most
            image ids.
        name: The dataset's name, for messages.

    Returns:
        ``image_id`` to ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: The file is malformed (the message names file and line).
        SplitError: No image column, an unknown or empty split value, a repeated name, images
            of the dataset missing from the file or names in the file not in the dataset, or
            a split left empty.
    """
    path = Path(path)
    required = [column] + ([image_column] if image_column else [])
    header, rows = read_table(path, required=required)
    ids = {record.image_id for record in records}
    if image_column is None:
        image_column = _image_column(path, header, rows, column, ids, records)
    listed: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for row in rows:
        image, value = row[image_column], row[column]
        where = f"{path}, line {row.line}"
        if not image:
            raise SplitError(f"{where}, column '{image_column}': the image name is empty")
        if image in first_line:
            raise SplitError(
                f"{path}: image '{image}' (column '{image_column}') is listed on lines "
                f"{first_line[image]} and {row.line}; each image needs one split"
            )
        unknown = f"{where}, column '{column}': split {value!r} of image '{image}' is unknown"
        first_line[image] = row.line
        listed[image] = official_split_name(value, unknown)
    _check_same_images(path, name, image_column, [r.image_id for r in records], listed)
    assignment = {r.image_id: listed[r.image_id] for r in records}
    check_non_empty(
        assignment, "column", unit="images", hint=f"the file {path} gives that split no image"
    )
    _warn_shared_references(records, assignment, path)
    counts = {s: sum(v == s for v in assignment.values()) for s in ("train", "val", "test")}
    logger.info(
        "%s: split=column from %s (split column '%s', image names in '%s'): train %d, "
        "val %d, test %d",
        name,
        path,
        column,
        image_column,
        counts["train"],
        counts["val"],
        counts["test"],
    )
    return assignment


def _image_column(path, header, rows, column, ids, records) -> str:
    candidates = [c for c in header if c and c != column]
    matches = {c: sum(row.values.get(c) in ids for row in rows) for c in candidates}
    best = max(candidates, key=lambda c: matches[c], default=None)
    if best is None or matches[best] == 0:
        example = next(iter(records)).image_id if records else "?"
        first = {c: rows[0].values.get(c, "") for c in candidates} if rows else {}
        raise SplitError(
            f"{path}: no column holds the dataset's image names (e.g. '{example}'); its columns "
            f"are {header}, first row {first}. Set dataset.split_image_column to the column "
            "of image names"
        )
    return best


def _check_same_images(path, name, image_column, image_ids, listed) -> None:
    missing = [image_id for image_id in image_ids if image_id not in listed]
    known = set(image_ids)
    extra = [image for image in listed if image not in known]
    if not missing and not extra:
        return
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of the {len(image_ids)} images of {name} are not in it: "
            + _few(missing)
        )
    if extra:
        problems.append(
            f"{len(extra)} of its {len(listed)} names (column '{image_column}') are not images "
            f"of {name}: " + _few(extra)
        )
    raise SplitError(
        f"split file {path} does not list the same images as the dataset: "
        + "; ".join(problems)
        + ". Use a split file made for this dataset (and layout), or set "
        "dataset.split_image_column"
    )


def _warn_shared_references(records, assignment, path) -> None:
    splits_of: dict[str, set[str]] = {}
    for record in records:
        if record.ref_id is not None:
            splits_of.setdefault(record.ref_id, set()).add(assignment[record.image_id])
    shared = sorted(ref for ref, splits in splits_of.items() if len(splits) > 1)
    if shared:
        logger.warning(
            "split=column: the split of %s puts images of %d of %d references in more than "
            "one split (e.g. %s), so reference content leaks between train, val and test",
            path,
            len(shared),
            len(splits_of),
            ", ".join(shared[:3]),
        )


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:_SHOW_AT_MOST])
    return shown + (
        f", ... ({len(names) - _SHOW_AT_MOST} more)" if len(names) > _SHOW_AT_MOST else ""
    )
