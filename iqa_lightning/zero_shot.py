"""The zero-shot baseline of a run: its module scored on the test split before any training.

Every method's untrained module is the frozen backbone as its tuning starts (a LoRA adds zero,
a pixel prompt starts at ``randn * 0.01``), so the same test images scored before ``fit`` give
the figure the tuned run must beat. The training driver writes them to the run folder as
``predictions_zeroshot_test.csv`` (the columns of ``predictions_test.csv``) and adds
``zeroshot/srcc``, ``zeroshot/plcc`` to ``metrics.json``; the demo prints both side by side.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from iqa_lightning.bootstrap import bootstrap_intervals
from iqa_lightning.callbacks.plots import ZERO_SHOT_FILE
from iqa_lightning.callbacks.predictions import prediction_columns, write_rows
from iqa_lightning.scorer import score_loader

__all__ = ["ZERO_SHOT_FILE", "comparison_table", "figures", "score_zero_shot"]

log = logging.getLogger("iqa_lightning")


def figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """SRCC and PLCC of the rows' ``score`` against their ``target`` (NaN when undefined, and
    when a score is not finite)."""
    scores = [float(r["score"]) for r in rows]
    targets = [float(r["target"]) for r in rows]
    if not all(math.isfinite(x) for x in scores + targets):
        return {"srcc": math.nan, "plcc": math.nan}
    return bootstrap_intervals(scores, targets, n=0)


def score_zero_shot(trainer, module, datamodule, out: Path | None) -> dict[str, float]:
    """Score the test split with the untrained ``module`` and write the rows to ``out``.

    Args:
        trainer: A Trainer with a :class:`~iqa_lightning.scorer.RowCollector` callback and no
            logger (its own, not the training one).
        module: The module about to be trained.
        datamodule: The run's data module (an instruction mixture's score data is used).
        out: The run folder (rank 0), or None to write nothing.

    Returns:
        ``{"zeroshot/srcc": ..., "zeroshot/plcc": ...}``.
    """
    data = getattr(datamodule, "score_datamodule", None) or datamodule
    data.setup("test")
    rows = score_loader(trainer, module, data.eval_dataloader("test"))
    if out is not None:
        write_rows(out / ZERO_SHOT_FILE, rows, prediction_columns(rows))
    result = {f"zeroshot/{k}": v for k, v in figures(rows).items()}
    log.info("zero-shot on %d test images: %s", len(rows), result)
    return result


def comparison_table(metrics: dict[str, float | None]) -> str:
    """Zero-shot and tuned test SRCC / PLCC side by side, with the gain."""
    lines = ["          zero-shot   tuned    gain"]
    for name in ("srcc", "plcc"):
        before, after = metrics.get(f"zeroshot/{name}"), metrics.get(f"test/{name}")
        cells = [_cell(before), _cell(after)]
        gain = after - before if before is not None and after is not None else None
        lines.append(f"test {name}  {cells[0]:>9}  {cells[1]:>6}  {_cell(gain, signed=True):>6}")
    return "\n".join(lines)


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None or value != value:
        return "nan"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
