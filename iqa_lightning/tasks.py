"""What a batch asks for, and the multiple-choice accuracy bookkeeping.

Three tasks share one model:

- ``score``: IQA batches (``pixels``, ``target``, ``mos_raw``, ``image_id``): a quality score from
  the logits of quality words, MSE against the normalised MOS.
- ``instruct``: instruction conversations (``pixels``, ``turns``): next-token cross-entropy on the
  answer tokens only (Q-Instruct style).
- ``mcq``: multiple-choice perception questions (``pixels``, ``prompt``, ``letters``,
  ``answer_index``, ``type``, ``concern``): the answer is the candidate letter with the highest
  next-token logit, no free generation (Q-Bench style); metric: accuracy by type and concern.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

TASKS = ("score", "instruct", "mcq")


def task_of(batch: dict[str, Any]) -> str:
    """The task of a batch: its ``task`` key, or what its keys say."""
    if "task" in batch:
        task = batch["task"]
        task = task[0] if isinstance(task, (list, tuple)) else task
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} in a batch; tasks are {TASKS}")
        return task
    if "answer_index" in batch:
        return "mcq"
    if "turns" in batch:
        return "instruct"
    if "target" in batch:
        return "score"
    raise ValueError(f"cannot tell the task of a batch with keys {sorted(batch)}")


class MCQTally:
    """Correct / total counts of multiple-choice answers, overall and by type and concern."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def update(self, correct: list[bool], types: list[str], concerns: list[str]) -> None:
        for ok, kind, concern in zip(correct, types, concerns, strict=True):
            for key in ("acc", f"acc/type/{kind}", f"acc/concern/{concern}"):
                self.counts[key][0] += int(ok)
                self.counts[key][1] += 1

    def compute(self, prefix: str) -> dict[str, torch.Tensor]:
        """Accuracies (summed over DDP ranks) with keys like ``val/mcq_acc/type/what``."""
        counts = dict(self.counts)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[dict] = [{} for _ in range(dist.get_world_size())]
            dist.all_gather_object(parts, counts)
            counts = defaultdict(lambda: [0, 0])
            for part in parts:
                for key, (ok, total) in part.items():
                    counts[key][0] += ok
                    counts[key][1] += total
        return {
            f"{prefix}mcq_{key}": torch.tensor(ok / total)
            for key, (ok, total) in sorted(counts.items())
            if total
        }

    def reset(self) -> None:
        self.counts.clear()


def pick_answers(logits: torch.Tensor, letter_ids: list[list[int]]) -> list[int]:
    """Index of the candidate letter with the highest logit, per row."""
    return [int(torch.argmax(row[ids]).item()) for row, ids in zip(logits, letter_ids, strict=True)]
