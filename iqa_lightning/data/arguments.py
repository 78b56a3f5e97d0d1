"""Checks of data module arguments and records, with messages that name the config key."""

from __future__ import annotations

import math
from collections.abc import Sequence

from iqa_lightning.errors import AnnotationError

from .records import ImageRecord
from .splits import SPLIT_NAMES

__all__ = [
    "check_mos",
    "check_mos_range",
    "check_split_keys",
    "check_split_name",
    "check_unique_ids",
    "integer",
    "positive_int",
]

_MOS_TOLERANCE = 1e-6
_SHOW_AT_MOST = 5


def check_mos(records: Sequence[ImageRecord], mos_range: tuple[float, float], name: str) -> None:
    """Raise unless every score is finite and inside ``mos_range`` (with a 1e-6 tolerance).

    Raises:
        AnnotationError: Scores outside the range; the message counts and names a few.
    """
    lo, hi = mos_range
    bad = [
        r
        for r in records
        if not math.isfinite(r.mos_raw)
        or r.mos_raw < lo - _MOS_TOLERANCE
        or r.mos_raw > hi + _MOS_TOLERANCE
    ]
    if bad:
        shown = ", ".join(f"'{r.image_id}' ({r.mos_raw:g})" for r in bad[:_SHOW_AT_MOST])
        raise AnnotationError(
            f"{name}: {len(bad)} image(s) have a score outside dataset.mos_range "
            f"[{lo:g}, {hi:g}]: {shown}. Set dataset.mos_range to the scale of the "
            "annotation file"
        )


def check_unique_ids(records: Sequence[ImageRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.image_id in seen:
            raise AnnotationError(f"duplicate image id '{record.image_id}' in the dataset records")
        seen.add(record.image_id)


def check_split_keys(split, split_file, split_column, split_image_column) -> None:
    if split == "column" and not split_file:
        raise ValueError(
            "dataset.split=column needs dataset.split_file: a label file with a split column "
            "(e.g. split_kadid10k.csv), and dataset.split_column if that column is not 'split'"
        )
    if split_image_column and split != "column":
        raise ValueError(
            f"dataset.split_image_column applies to dataset.split=column (now {split!r}); "
            "leave it null"
        )
    if split not in ("column", "pyiqa") and (split_file or split_column):
        raise ValueError(
            "dataset.split_file / dataset.split_column select a split file with a split "
            "column or a pyiqa split; set dataset.split=column or dataset.split=pyiqa "
            f"(now {split!r}), or leave them null"
        )


def check_split_name(split: str) -> None:
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {list(SPLIT_NAMES)}, got {split!r}")


def positive_int(value, key: str) -> int:
    return integer(value, key, minimum=1)


def integer(value, key: str, minimum: int | None) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError):
        ok = False
    if not ok or (minimum is not None and int(value) < minimum):
        bound = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"dataset.{key} must be {bound}, got {value!r}")
    return int(value)


def check_mos_range(mos_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in mos_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"dataset.mos_range must be two numbers [lo, hi], got {mos_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"dataset.mos_range must satisfy lo < hi, got [{lo:g}, {hi:g}]")
    return lo, hi
