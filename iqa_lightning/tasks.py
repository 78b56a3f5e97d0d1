"""What a batch asks for, and the multiple-choice accuracy bookkeeping.

Three tasks share one model:

- ``score``: IQA batches (``pixels``, ``target``, ``mos_raw``, ``image_id``): a quality score from
  the logits of quality words, MSE against the normalised MOS.
- ``instruct``: instruction conversations (``pixels``, ``turns``): next-token cross-entropy on the
  answer tokens only (Q-Instruct style).
- ``mcq``: multiple-choice perception questions (``pixels``, ``prompt``, ``letters``,
  ``answer_index``, ``type``, ``concern``, and how to answer them, ``answer_by``): by
  ``generate``, the model's greedy answer matched against the option letters as Q-Align's
  ``eval_qbench_mcq.py`` (lines 96-129) counts it, or by ``likelihood``, the candidate letter with
  the highest next-token logit (no free generation); metric: accuracy by type and concern.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

TASKS = ("score", "instruct", "mcq")
#: How a multiple-choice batch is answered (``answer_by``): greedy generation matched against
#: the letters (Q-Align's Q-Bench evaluation), or the likelihood of each option's letter.
MCQ_ANSWERING = ("generate", "likelihood")
#: Q-Align's length limit of a generated Q-Bench answer (eval_qbench_mcq.py ``--max-new-tokens``).
MCQ_MAX_NEW_TOKENS = 512


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


def match_letter(text: str, letters: list[str], answer_index: int) -> int:
    """The option a generated answer picks, counted as Q-Align counts it
    (eval_qbench_mcq.py:128: correct when the correct option's letter occurs anywhere in the
    stripped output).

    Returns:
        ``answer_index`` when its letter is in ``text``; else the first option whose letter is
        in it; else -1 (no option named).
    """
    text = text.strip()
    if 0 <= answer_index < len(letters) and letters[answer_index] in text:
        return answer_index
    return next((i for i, letter in enumerate(letters) if letter in text), -1)


def _answer_setting(batch: dict[str, Any], key: str, default: Any) -> Any:
    value = batch.get(key, default)
    return value[0] if isinstance(value, (list, tuple)) else value


def answer_mcq(scorer: Any, batch: dict[str, Any]) -> list[int]:
    """The chosen option index per question of a multiple-choice batch, answered as its
    ``answer_by`` says (``likelihood`` when the batch does not say).

    Args:
        scorer: A scorer serving ``mcq``: ``generate(pixels, prompts, max_new_tokens)`` for
            ``generate``; ``option_logits(pixels, prompts)`` and ``letter_id(letter)`` for
            ``likelihood``.
        batch: ``pixels``, ``prompt``, ``letters``, ``answer_index`` and optionally
            ``answer_by`` and ``max_new_tokens`` (one per question, all equal).

    Raises:
        ValueError: An unknown ``answer_by``.
    """
    mode = _answer_setting(batch, "answer_by", "likelihood")
    if mode not in MCQ_ANSWERING:
        raise ValueError(f"instruct.mcq_answer={mode!r} must be one of {list(MCQ_ANSWERING)}")
    if mode == "likelihood":
        logits = scorer.option_logits(batch["pixels"], batch["prompt"])
        letter_ids = [[scorer.letter_id(x) for x in letters] for letters in batch["letters"]]
        return pick_answers(logits, letter_ids)
    limit = int(_answer_setting(batch, "max_new_tokens", MCQ_MAX_NEW_TOKENS))
    texts = scorer.generate(batch["pixels"], list(batch["prompt"]), limit)
    truth = [int(x) for x in batch["answer_index"]]
    return [
        match_letter(text, list(letters), answer)
        for text, letters, answer in zip(texts, batch["letters"], truth, strict=True)
    ]
