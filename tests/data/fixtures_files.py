"""Writers of label files in the shapes reference code ships them, for split files and tables.

- Split files as mplug2-vp-for-nriqa's ``data/split_kadid10k.csv`` and ``data/split_agiqa3k.csv``:
  the dataset's label CSV with its columns unchanged plus a last ``split`` column of
  ``train`` / ``val`` / ``test``, written by pandas (``\\n`` line ends, quotes only where a cell
  needs them).
- Q-Align's score JSONs (``playground/data/test_jsons``): compact one-line lists of
  ``{"img_path": ..., "gt_score": ...}`` (``agi.json`` stores the score as text) or
  ``{"image": ..., "gt_score": ...}``; its conversation JSONs (``test_koniq.json``,
  ``test_kadid.json``): ``id`` ``"<name>-><score>"``, ``image``, two ``conversations`` turns
  with the ``<|image|>`` placeholder and, in the test files, ``gt_score``; indented by 4.
- DeQA-Score's meta files (``build_soft_labels/gen_soft_label.py``): Q-Align's records plus
  ``gt_score_norm``, ``level_probs`` and ``std``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "LEVELS",
    "leaky_split_of",
    "qalign_conversation",
    "qalign_pair",
    "write_deqa_json",
    "write_qalign_conversations",
    "write_qalign_scores",
    "write_split_csv",
]

LEVELS = ("bad", "poor", "fair", "good", "excellent")


def leaky_split_of(position: int) -> str:
    """The split of the ``position``-th row in :func:`write_split_csv` files: 8:1:1 per image,
    so images of one reference land in different splits (as in ``split_kadid10k.csv``)."""
    slot = position % 10
    return "test" if slot == 9 else ("val" if slot == 8 else "train")


def write_split_csv(
    labels: str | os.PathLike,
    path: str | os.PathLike,
    split_of: Callable[[int], str] = leaky_split_of,
    column: str = "split",
) -> Path:
    """Write ``labels`` (a dataset's label CSV) with a split column appended, as pandas'
    ``DataFrame.to_csv(index=False)`` writes it.

    Args:
        labels: The dataset's label file, e.g. KADID-10k's ``dmos.csv``.
        path: The split file to write.
        split_of: The split of each data row, by 0-based position.
        column: Name of the split column.

    Returns:
        ``path``.
    """
    with Path(labels).open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*rows[0], column])
        for position, row in enumerate(rows[1:]):
            writer.writerow([*row, split_of(position)])
    return path


def qalign_conversation(image: str, score: float, lo: float, hi: float, question: str) -> dict:
    """One record of Q-Align's conversation files (``test_koniq.json``)."""
    level = LEVELS[min(4, int((score - lo) / (hi - lo) * 5))]
    return {
        "id": f"{Path(image).name}->{score}",
        "image": image,
        "conversations": [
            {"from": "human", "value": f"{question}\n<|image|>"},
            {"from": "gpt", "value": f"The quality of the image is {level}."},
        ],
        "gt_score": score,
    }


def qalign_pair(first: str, second: str, better_first: bool) -> dict:
    """A record about two images, as in Q-Align's KADID conversation file: ``image`` is a list
    of two paths and the first human turn holds one ``<|image|>`` per image."""
    answer = "The first image is better." if better_first else "The second image is better."
    return {
        "id": f"{Path(first).name}-{Path(second).name}",
        "image": [first, second],
        "conversations": [
            {"from": "human", "value": "<|image|><|image|>Which image has better quality?"},
            {"from": "gpt", "value": answer},
        ],
    }


def write_qalign_scores(
    path: str | os.PathLike,
    images: Sequence[str],
    scores: Sequence[float],
    key: str = "img_path",
    as_text: bool = False,
) -> Path:
    """A Q-Align score list on one line: ``[{"img_path": ..., "gt_score": ...}, ...]``.

    Args:
        path: The JSON file.
        images: Image paths as the file gives them (relative to its image folder).
        scores: Their scores.
        key: ``img_path`` (``agi.json``, ``livec.json``) or ``image`` (``csiq.json``).
        as_text: Store the scores as strings, as ``agi.json`` does.
    """
    records = [
        {key: image, "gt_score": f"{score:.9g}" if as_text else score}
        for image, score in zip(images, scores, strict=True)
    ]
    return _write_json(path, records, indent=None)


def write_qalign_conversations(
    path: str | os.PathLike,
    images: Sequence[str],
    scores: Sequence[float],
    mos_range: tuple[float, float],
    with_score: bool = True,
    pairs: Sequence[tuple[str, str]] = (),
) -> Path:
    """A Q-Align conversation file (indent 4); ``with_score=False`` leaves ``gt_score`` out, as
    the training files do (their score is only in the ``id``). Each of ``pairs`` adds a
    two-image record (:func:`qalign_pair`) after every third single-image record."""
    questions = ("How would you rate the quality of this image?", "Can you rate the quality?")
    records = []
    for i, (image, score) in enumerate(zip(images, scores, strict=True)):
        record = qalign_conversation(image, score, *mos_range, questions[i % 2])
        if not with_score:
            del record["gt_score"]
        records.append(record)
    for k, (first, second) in enumerate(pairs):
        records.insert(min(len(records), 3 * (k + 1) + k), qalign_pair(first, second, k % 2 == 0))
    return _write_json(path, records, indent=4)


def write_deqa_json(
    path: str | os.PathLike,
    images: Sequence[str],
    scores: Sequence[float],
    stds: Sequence[float],
    mos_range: tuple[float, float],
) -> Path:
    """A DeQA-Score meta file: Q-Align's conversation records with ``gt_score_norm`` (1-5),
    ``level_probs`` and ``std`` / ``std_norm``."""
    lo, hi = mos_range
    records = []
    for image, score, std in zip(images, scores, stds, strict=True):
        record = qalign_conversation(image, score, lo, hi, "How is the quality of this image?")
        record.pop("gt_score")
        record.update(
            {
                "gt_score": score,
                "gt_score_norm": 4 * (score - lo) / (hi - lo) + 1,
                "level_probs": [0.1, 0.2, 0.4, 0.2, 0.1],
                "std": std,
                "std_norm": 4 * std / (hi - lo),
            }
        )
        records.append(record)
    return _write_json(path, records, indent=4)


def _write_json(path, records, indent) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=indent), encoding="utf-8")
    return path
