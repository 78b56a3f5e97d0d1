"""Write one row per test image to ``predictions_test.csv`` in the run folder."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist

COLUMNS = ("image_id", "mos_raw", "target", "score")


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collect every rank's rows, keeping one row per image (DistributedSampler pads by repeats)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(parts, rows)
        rows = [row for part in parts for row in part]
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["image_id"], row)
    return list(unique.values())


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class PredictionWriter(L.Callback):
    """Writes ``predictions_test.csv`` (image_id, mos_raw, target, score) after each test.

    Args:
        output_dir: The run folder.
        filename: File name inside it.
    """

    def __init__(self, output_dir: str, filename: str = "predictions_test.csv") -> None:
        self.path = Path(output_dir) / filename

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = gather_rows(pl_module.test_rows)
        pl_module.test_rows = rows
        if trainer.is_global_zero:
            write_rows(self.path, sorted(rows, key=lambda r: r["image_id"]))
