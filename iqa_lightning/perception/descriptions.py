"""Ground-truth descriptions of images, by image id (``perception.descriptions``).

The perception stage is trained to write them, the inference stage reads them in training (and
at evaluation with ``inference.description=given``). Two sources:

- :class:`SyntheticDescriptions`: the synthetic KADID-style set, whose distortions are known
  from the image names (:func:`~iqa_lightning.data.instruct.descriptions.synthetic_description`);
  every image has one.
- :class:`QInstructDescriptions`: descriptive answers of a Q-Instruct / LLaVA conversation file
  (``cleaned_labels.json``, or the synthetic generator's ``descriptions.json``): per image, the
  answer to the first human turn of the first record (in file order) whose first question
  matches ``question_pattern``. Images are matched by file stem (``spaq_koniq/10004.jpg`` is
  image id ``10004.jpg`` or ``10004``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from iqa_lightning.data.instruct.descriptions import synthetic_description

__all__ = [
    "SOURCES",
    "DescriptionError",
    "QInstructDescriptions",
    "SyntheticDescriptions",
    "description_source",
]

SOURCES = ("synthetic", "qinstruct")


class DescriptionError(KeyError):
    """An image has no ground-truth description; the message names the image and source."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SyntheticDescriptions:
    """Descriptions of the synthetic set's images, computed from their names.

    Args:
        levels: Severity levels of the set (``dataset.levels``).
    """

    def __init__(self, levels: int = 5) -> None:
        self.levels = int(levels)

    def __call__(self, image_id: str) -> str:
        try:
            return synthetic_description(image_id, self.levels)
        except ValueError as err:
            raise DescriptionError(f"perception.descriptions=synthetic: {err}") from None

    def many(self, image_ids: Sequence[str]) -> list[str]:
        """One description per image id."""
        return [self(i) for i in image_ids]


class QInstructDescriptions:
    """Descriptions read from a Q-Instruct / LLaVA conversation file (module docstring).

    Args:
        json_path: The conversation file.
        question_pattern: Regular expression (case-insensitive, searched) the record's first
            question must match; None: every record.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a list of conversation records, or no record matches.
    """

    def __init__(
        self, json_path: str | os.PathLike, question_pattern: str | None = r"\bdescri"
    ) -> None:
        self.path = Path(os.path.expanduser(str(json_path)))
        if not self.path.is_file():
            raise FileNotFoundError(f"perception.descriptions.json_path: no file {self.path}")
        pattern = re.compile(question_pattern, re.IGNORECASE) if question_pattern else None
        records = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise ValueError(f"{self.path}: expected a JSON list of conversation records")
        self.table: dict[str, str] = {}
        for index, record in enumerate(records):
            turns = record.get("conversations") if isinstance(record, dict) else None
            image = record.get("image") if isinstance(record, dict) else None
            if not isinstance(turns, list) or len(turns) < 2 or not isinstance(image, str):
                raise ValueError(
                    f"{self.path}, record {index}: expected 'image' and at least one "
                    "human / gpt turn in 'conversations'"
                )
            question, answer = str(turns[0].get("value", "")), str(turns[1].get("value", ""))
            if pattern is not None and not pattern.search(question):
                continue
            self.table.setdefault(Path(image).stem, answer.strip())
        if not self.table:
            raise ValueError(
                f"{self.path}: no record's first question matches "
                f"perception.descriptions.question_pattern={question_pattern!r}"
            )

    def __call__(self, image_id: str) -> str:
        key = Path(str(image_id)).stem
        if key not in self.table:
            raise DescriptionError(
                f"image {image_id!r} has no description in {self.path} ({len(self.table)} "
                "images described); train and test on described images only"
            )
        return self.table[key]

    def many(self, image_ids: Sequence[str]) -> list[str]:
        """One description per image id."""
        return [self(i) for i in image_ids]


def description_source(
    kind: str = "synthetic",
    levels: int = 5,
    json_path: str | os.PathLike | None = None,
    question_pattern: str | None = r"\bdescri",
):
    """The source ``perception.descriptions`` names (one config node for both kinds).

    Args:
        kind: ``synthetic`` (:class:`SyntheticDescriptions`) or ``qinstruct``
            (:class:`QInstructDescriptions`).
        levels: The synthetic set's severity levels (``dataset.levels``).
        json_path: The conversation file (``qinstruct``).
        question_pattern: See :class:`QInstructDescriptions`.

    Raises:
        ValueError: An unknown ``kind``, or ``qinstruct`` without ``json_path``.
    """
    if kind == "synthetic":
        return SyntheticDescriptions(levels)
    if kind == "qinstruct":
        if json_path is None:
            raise ValueError(
                "perception.descriptions.kind=qinstruct needs perception.descriptions.json_path"
            )
        return QInstructDescriptions(json_path, question_pattern)
    raise ValueError(f"perception.descriptions.kind={kind!r} must be one of {list(SOURCES)}")
