"""Write one row per test image to ``predictions_test.csv`` in the run folder.

The rows are the module's: :class:`~iqa_lightning.module.IQAModule` gathers them across ranks
at the end of its test epoch (``test_rows``), so every callback reading them after the test sees
the same rows, whatever the order of the callbacks. Rows that carry the description the score
was read after (a scorer's ``description`` extra) also go to ``descriptions_test.csv``
(image_id, score, description).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L

from iqa_lightning.module import gather_rows
from iqa_lightning.run_folder import RunFolder

COLUMNS = ("image_id", "mos_raw", "target", "score")
DESCRIPTION_COLUMNS = ("image_id", "score", "description")
DESCRIPTIONS_FILE = "descriptions_test.csv"


def write_rows(path: Path, rows: list[dict[str, Any]], columns=COLUMNS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def prediction_columns(rows: list[dict[str, Any]]) -> list[str]:
    """:data:`COLUMNS`, then the per-level columns the rows carry: ``p_<word>`` (the predicted
    probability of each score word) and ``target_<word>`` (the level distribution the image is
    trained towards, or its rating histogram), in the score head's word order; then the
    scorer's other per-image extras (e.g. a parsed answer and whether it parsed), but the
    description, which has its own file (:data:`DESCRIPTIONS_FILE`)."""
    first = rows[0] if rows else {}
    levels = [k for k in first if k.startswith(("p_", "target_")) and k not in COLUMNS]
    extras = [k for k in first if k not in (*COLUMNS, *levels, "description")]
    return [*COLUMNS, *levels, *extras]


class PredictionWriter(L.Callback):
    """Writes ``predictions_test.csv`` (image_id, mos_raw, target, score, then the per-level
    ``p_<word>`` / ``target_<word>`` columns where the rows have them) after each test.

    Reads the module's gathered ``test_rows`` and changes nothing on the module.

    Args:
        output_dir: The run folder.
        filename: File name inside it.
    """

    def __init__(self, output_dir: str, filename: str = RunFolder.PREDICTIONS.name) -> None:
        self.path = Path(output_dir) / filename

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            rows = sorted(pl_module.test_rows, key=lambda r: r["image_id"])
            write_rows(self.path, rows, prediction_columns(rows))
            if rows and "description" in rows[0]:
                write_rows(self.path.parent / DESCRIPTIONS_FILE, rows, DESCRIPTION_COLUMNS)


__all__ = ["COLUMNS", "PredictionWriter", "gather_rows", "prediction_columns", "write_rows"]
