"""What a sweep job's prediction files say: its test SRCC / PLCC with bootstrap intervals, and a
paired bootstrap p-value against the untrained (zero-shot) model's scores of the same images.

A job folder may hold ``predictions_test.csv`` (``image_id, mos_raw, target, score``, then maybe
more columns) and ``predictions_zeroshot_test.csv`` (the same columns: the untrained model's
scores of the same test images). Both are optional; a file that cannot be read is named in a
warning and leaves its cells empty (None), so a sweep's summary is always written.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_lightning.bootstrap import bootstrap_intervals, paired_bootstrap_pvalue

log = logging.getLogger("iqa_lightning.sweeps")

PREDICTIONS = "predictions_test.csv"
ZERO_SHOT_PREDICTIONS = "predictions_zeroshot_test.csv"
ZERO_SHOT = "zero-shot"  # the status and method of the zero-shot row
BOOTSTRAP = 1000  # resamples of the intervals and p-values
BOOTSTRAP_SEED = 0
STAT_COLUMNS = ("test_srcc_ci", "test_plcc_ci", "p_vs_zero_shot")

__all__ = [
    "STAT_COLUMNS",
    "ZERO_SHOT",
    "figure_cells",
    "prediction_figures",
    "read_predictions",
    "zero_shot_figures",
]


def read_predictions(path: str | Path) -> list[tuple[str, float, float]]:
    """``(image_id, target, score)`` of each row of a predictions CSV (``image_id, mos_raw,
    target, score``, then maybe more columns), in file order.

    Raises:
        ValueError: A column is missing or a value is not a number.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("image_id", "target", "score") if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        return [(r["image_id"], float(r["target"]), float(r["score"])) for r in reader]


def figure_cells(figures: dict[str, float]) -> dict[str, Any]:
    """test/srcc, test/plcc and their ``(lo, hi)`` intervals from :func:`bootstrap_intervals`."""
    out: dict[str, Any] = {"test/srcc": figures["srcc"], "test/plcc": figures["plcc"]}
    for metric in ("srcc", "plcc"):
        bounds = (figures.get(f"{metric}_lo"), figures.get(f"{metric}_hi"))
        out[f"test_{metric}_ci"] = None if bounds[0] is None else bounds
    return out


def prediction_figures(
    folder: Path, bootstrap: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """A job's test figures from its prediction files; None where a file is absent or cannot
    be read (a warning names it).

    Args:
        folder: The job's run folder.
        bootstrap: Resamples (0: no intervals, no p-value).
        seed: Seed of the resampling (the same index sets for the intervals and the test).

    Returns:
        ``test/srcc``, ``test/plcc`` and their ``(lo, hi)`` intervals ``test_srcc_ci``,
        ``test_plcc_ci`` (:func:`~iqa_lightning.bootstrap.bootstrap_intervals` on
        ``predictions_test.csv``), and ``p_vs_zero_shot``: the paired bootstrap p-value
        (:func:`~iqa_lightning.bootstrap.paired_bootstrap_pvalue`) that the run's test SRCC
        equals the SRCC of ``predictions_zeroshot_test.csv``, on the test images both files
        score (matched by ``image_id``, the run's targets).
    """
    out: dict[str, Any] = dict.fromkeys(("test/srcc", "test/plcc", *STAT_COLUMNS))
    path = folder / PREDICTIONS
    if not path.exists():
        return out
    try:
        rows = read_predictions(path)
        scores, targets = [r[2] for r in rows], [r[1] for r in rows]
        out.update(figure_cells(bootstrap_intervals(scores, targets, n=bootstrap, seed=seed)))
    except (OSError, ValueError) as err:
        log.warning("sweep summary: %s: %s", path, err)
        return out
    zero_path = folder / ZERO_SHOT_PREDICTIONS
    if not zero_path.exists() or bootstrap < 1:
        return out
    try:
        zero = {image_id: score for image_id, _, score in read_predictions(zero_path)}
        matched = [r for r in rows if r[0] in zero]
        if len(matched) < len(rows):
            log.warning(
                "sweep summary: %s: %d of %d test images have no zero-shot score; "
                "p_vs_zero_shot compares the rest",
                zero_path, len(rows) - len(matched), len(rows),
            )  # fmt: skip
        p = paired_bootstrap_pvalue(
            [r[2] for r in matched],
            [zero[r[0]] for r in matched],
            [r[1] for r in matched],
            n=bootstrap,
            seed=seed,
        )
        out["p_vs_zero_shot"] = p if p == p else None  # NaN (under 2 images): empty
    except (OSError, ValueError) as err:
        log.warning("sweep summary: %s: %s", zero_path, err)
    return out


def zero_shot_figures(
    folders: Sequence[Path], bootstrap: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[int, dict[str, Any]] | None:
    """The zero-shot test figures (:func:`figure_cells`) of the first of ``folders`` with a
    readable ``predictions_zeroshot_test.csv``, with that folder's index; None when none has
    one."""
    for index, folder in enumerate(folders):
        path = Path(folder) / ZERO_SHOT_PREDICTIONS
        if not path.exists():
            continue
        try:
            rows = read_predictions(path)
            figures = bootstrap_intervals(
                [r[2] for r in rows], [r[1] for r in rows], n=bootstrap, seed=seed
            )
        except (OSError, ValueError) as err:
            log.warning("sweep summary: %s: %s", path, err)
            continue
        return index, figure_cells(figures)
    return None
