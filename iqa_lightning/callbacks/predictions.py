"""Write one row per test image to ``predictions_test.csv`` in the run folder.

The rows are the module's: :class:`~iqa_lightning.module.IQAModule` gathers them across ranks
at the end of its test epoch (``test_rows``), so every callback reading them after the test sees
the same rows, whatever the order of the callbacks.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L

from iqa_lightning.module import gather_rows

COLUMNS = ("image_id", "mos_raw", "target", "score")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class PredictionWriter(L.Callback):
    """Writes ``predictions_test.csv`` (image_id, mos_raw, target, score) after each test.

    Reads the module's gathered ``test_rows`` and changes nothing on the module.

    Args:
        output_dir: The run folder.
        filename: File name inside it.
    """

    def __init__(self, output_dir: str, filename: str = "predictions_test.csv") -> None:
        self.path = Path(output_dir) / filename

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            rows = sorted(pl_module.test_rows, key=lambda r: r["image_id"])
            write_rows(self.path, rows)


__all__ = ["COLUMNS", "PredictionWriter", "gather_rows", "write_rows"]
