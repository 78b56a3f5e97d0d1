"""Train / val / test assignment.

Strategies (the ``split`` argument, config key ``dataset.split``):

- ``official``: the dataset's published split (``ImageRecord.official_split``), with names such
  as training / validation / test mapped to train / val / test.
- ``reference_disjoint``: references (``ref_id``) are shuffled with the seed and the ratios are
  applied to references, so no reference content appears in two splits.
- ``random``: a seeded per-image split; refused for datasets whose images share references,
  because it would put the same content in train and test.
- ``per_image_leaky``: the same per-image split, allowed for reference-based datasets to
  reproduce published numbers; it logs a warning that content leaks between splits.
- ``pyiqa``: the split pyiqa's files give each image (``ImageRecord.source_split``: a split column
  of pyiqa's meta-info CSV, or one entry of a pyiqa split pickle). pyiqa's seeded splits have
  two parts, train and one held-out part (named ``val`` or ``test``) on which pyiqa reports.
  That held-out part becomes ``test``, and ``val`` is carved out of pyiqa's train part with the
  seed and the val share of the ratios (by reference when every image has one), so the test
  set is exactly the one published pyiqa numbers are computed on.
- ``column``: the split a label file with a split column gives each image (config keys
  ``dataset.split_file``, ``dataset.split_column``, ``dataset.split_image_column``), read by
  :func:`~iqa_lightning.data.split_files.split_from_file`.

The assignment depends only on the set of image ids / reference ids, the ratios and the seed,
never on the order of rows in the annotation file.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence

from iqa_lightning.errors import SplitError

from .records import ImageRecord

__all__ = [
    "SPLIT_NAMES",
    "SPLIT_STRATEGIES",
    "OFFICIAL_SPLIT_NAMES",
    "SplitError",
    "assign_splits",
    "check_non_empty",
    "check_ratios",
    "official_split_name",
]

logger = logging.getLogger("iqa_lightning.data")

SPLIT_NAMES = ("train", "val", "test")
SPLIT_STRATEGIES = (
    "official",
    "reference_disjoint",
    "random",
    "per_image_leaky",
    "pyiqa",
    "column",
)
OFFICIAL_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def official_split_name(value: str, unknown: str) -> str:
    """``train``, ``val`` or ``test`` for a split written as any key of
    :data:`OFFICIAL_SPLIT_NAMES` (any case, blanks around it ignored).

    Args:
        value: The split as written.
        unknown: What the error says an unknown ``value`` is (naming where it was read).

    Raises:
        SplitError: ``"<unknown>; expected one of [...]"``.
    """
    name = OFFICIAL_SPLIT_NAMES.get(value.strip().lower())
    if name is None:
        raise SplitError(f"{unknown}; expected one of {sorted(OFFICIAL_SPLIT_NAMES)}")
    return name


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate split ratios.

    Args:
        ratios: (train, val, test) fractions; each in [0, 1], summing to 1.

    Returns:
        The ratios as a tuple of floats.

    Raises:
        SplitError: Wrong length, non-numeric, negative, or not summing to 1.
    """
    try:
        values = tuple(float(value) for value in ratios)
    except (TypeError, ValueError):
        raise SplitError(
            f"dataset.split_ratios must be three numbers (train, val, test), got {ratios!r}"
        ) from None
    if len(values) != 3:
        raise SplitError(
            f"dataset.split_ratios must have three entries (train, val, test), got {list(values)}"
        )
    if any(not math.isfinite(v) or v < 0 or v > 1 for v in values):
        raise SplitError(f"dataset.split_ratios entries must lie in [0, 1], got {list(values)}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise SplitError(
            f"dataset.split_ratios must sum to 1, got {list(values)} (sum {sum(values):.6g})"
        )
    return values  # type: ignore[return-value]


def assign_splits(
    records: Sequence[ImageRecord],
    split: str,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> dict[str, str]:
    """Assign every record to ``"train"``, ``"val"`` or ``"test"``.

    Args:
        records: Records with unique ``image_id``.
        split: Strategy name, one of :data:`SPLIT_STRATEGIES`.
        ratios: (train, val, test) fractions; ignored by ``official``.
        seed: Seed of the shuffle; ignored by ``official``.

    Returns:
        Mapping from ``image_id`` to split name.

    Raises:
        SplitError: Unknown strategy, bad ratios, a strategy that does not fit the dataset,
            or a split that ends up empty.
    """
    if split not in SPLIT_STRATEGIES:
        raise SplitError(f"dataset.split must be one of {list(SPLIT_STRATEGIES)}, got {split!r}")
    if not records:
        raise SplitError("no records to split (the dataset is empty)")
    if split == "column":
        raise SplitError("dataset.split=column reads a split file: use split_files.split_from_file")
    if split == "official":
        assignment = _official(records)
        check_non_empty(assignment, split, unit="images", hint="use dataset.split=random")
        return assignment

    ratios = check_ratios(ratios)
    if split == "pyiqa":
        assignment = _pyiqa(records, ratios, seed)
        check_non_empty(
            assignment,
            split,
            unit="images",
            hint="select another pyiqa split (dataset.split_column, or dataset.split_file with "
            "dataset.split_index), or raise the val share of dataset.split_ratios",
        )
        return assignment
    with_ref = [r for r in records if r.ref_id is not None]
    if split == "reference_disjoint":
        if len(with_ref) != len(records):
            missing = next(r.image_id for r in records if r.ref_id is None)
            raise SplitError(
                f"dataset.split=reference_disjoint needs a reference id for every image, but "
                f"'{missing}' has none; this dataset has no references, use dataset.split=random"
            )
        groups: dict[str, list[str]] = {}
        for record in records:
            groups.setdefault(record.ref_id, []).append(record.image_id)  # type: ignore[arg-type]
        unit = "references"
    else:
        if split == "random" and with_ref:
            raise SplitError(
                "dataset.split=random splits per image, but this dataset's images share "
                f"references (e.g. '{with_ref[0].image_id}' comes from '{with_ref[0].ref_id}'), "
                "so the same content would land in train and test. Use "
                "dataset.split=reference_disjoint (recommended), or dataset.split=per_image_leaky "
                "to reproduce the leaky per-image split of published code"
            )
        if split == "per_image_leaky" and with_ref:
            logger.warning(
                "dataset.split=per_image_leaky: images made from the same reference are split "
                "independently, so reference content leaks between train, val and test; "
                "scores are optimistic. Use dataset.split=reference_disjoint for a clean split."
            )
        groups = {record.image_id: [record.image_id] for record in records}
        unit = "images"

    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    counts = _allocate(len(keys), ratios)
    assignment: dict[str, str] = {}
    start = 0
    for name, count in zip(SPLIT_NAMES, counts, strict=True):
        for key in keys[start : start + count]:
            for image_id in groups[key]:
                assignment[image_id] = name
        start += count
    check_non_empty(
        assignment,
        split,
        unit=unit,
        hint=(
            f"raise its share in dataset.split_ratios (now {list(ratios)}) or use more data "
            f"({len(keys)} {unit} available)"
        ),
    )
    return assignment


def _official(records: Sequence[ImageRecord]) -> dict[str, str]:
    return _named_splits(
        records,
        "official",
        " (the annotation file has none); use dataset.split=random or "
        "dataset.split=reference_disjoint",
    )


def _named_splits(records: Sequence[ImageRecord], kind: str, missing_hint: str) -> dict[str, str]:
    """Each image's split as its ``<kind>_split`` field names it, mapped to train / val / test.

    Args:
        records: The images.
        kind: ``"official"`` (reads ``official_split``) or ``"pyiqa"`` (reads
            ``source_split``): the ``dataset.split`` value.
        missing_hint: What the message for an image without that split adds.

    Raises:
        SplitError: An image has no split of that kind, or an unknown split name.
    """
    assignment = {}
    for record in records:
        given = record.official_split if kind == "official" else record.source_split
        if given is None:
            raise SplitError(
                f"dataset.split={kind}, but image '{record.image_id}' has no {kind} split"
                f"{missing_hint}"
            )
        unknown = f"image '{record.image_id}' has unknown {kind} split {given!r}"
        assignment[record.image_id] = official_split_name(given, unknown)
    return assignment


def _pyiqa(
    records: Sequence[ImageRecord], ratios: tuple[float, float, float], seed: int
) -> dict[str, str]:
    assignment = _named_splits(
        records,
        "pyiqa",
        "; set dataset.split_column (a split column of pyiqa's meta-info file) or "
        "dataset.split_file (a pyiqa split pickle)",
    )
    held_out = set(assignment.values()) - {"train"}
    if "train" not in assignment.values() or len(held_out) != 1:
        return assignment
    # A two-part pyiqa split: its held-out part is what pyiqa reports on, so it becomes test.
    for image_id, name in assignment.items():
        if name != "train":
            assignment[image_id] = "test"
    train = [r for r in records if assignment[r.image_id] == "train"]
    by_ref = all(r.ref_id is not None for r in train)
    groups: dict[str, list[str]] = {}
    for record in train:
        groups.setdefault(record.ref_id if by_ref else record.image_id, []).append(record.image_id)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    train_ratio, val_ratio, _ = ratios
    share = val_ratio / (train_ratio + val_ratio) if train_ratio + val_ratio > 0 else 0.0
    n_val = _allocate(len(keys), (1.0 - share, share, 0.0))[1]
    for key in keys[:n_val]:
        for image_id in groups[key]:
            assignment[image_id] = "val"
    logger.info(
        "dataset.split=pyiqa: the split has two parts; its '%s' part is used as test and val is "
        "%d of %d %s of its train part (seed %d)",
        held_out.pop(),
        n_val,
        len(keys),
        "references" if by_ref else "images",
        seed,
    )
    return assignment


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split ``n`` units by largest remainder, giving each positive ratio at least one unit."""
    exact = [n * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if counts[i] == 0 and ratios[i] > 0:
            donor = max(range(3), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def check_non_empty(assignment: dict[str, str], split: str, unit: str, hint: str) -> None:
    """Raise :class:`SplitError` when a split of ``assignment`` is empty (the message names
    the strategy ``split``, the empty split and what is assigned, ``unit``, then ``hint``)."""
    present = set(assignment.values())
    for name in SPLIT_NAMES:
        if name not in present:
            raise SplitError(
                f"dataset.split={split} leaves the '{name}' split empty (no {unit} assigned); "
                f"{hint}"
            )
