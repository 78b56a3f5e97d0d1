"""Own data: any CSV or JSON list of images with scores (``dataset=table``).

The file is a CSV with a header row, or a JSON list of objects, one image per row / object:

- Q-Align's score lists (``playground/data/test_jsons``): ``[{"img_path": ..., "gt_score":
  ...}]`` or ``[{"image": ..., "gt_score": ...}]`` (scores as numbers or as text);
- Q-Align's and DeQA-Score's conversation files: ``{"id": "<name>-><score>", "image": ...,
  "conversations": [...], "gt_score": ...}`` (DeQA-Score adds ``std``); the conversations are
  ignored unless ``levels_from="answer"``, which takes each image's level word from the last
  word of its last assistant answer ("The quality of the image is good."), as the file's authors
  labelled it, for the level losses. Q-Align's training files have no ``gt_score``: the score is
  then read from the ``id`` (``"I01_01_01.png->4.57"``);
- a label CSV such as KADID-10k's ``dmos.csv`` or one with custom column names.

With ``image_key`` / ``score_key`` / ``std_key`` / ``split_key`` left at ``auto`` the first of
:data:`IMAGE_KEYS` / :data:`SCORE_KEYS` / :data:`STD_KEYS` / :data:`SPLIT_KEYS` that the file
has is used (and logged). Image paths are relative to ``root`` (default: the file's folder);
the image id is the path as the file writes it. Every row is checked: an error names the file,
the row (the CSV line, or the JSON index) and the key when a row lacks a value, holds an empty,
non-numeric or non-finite score, an unknown split name, several images, or repeats an image.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from iqa_lightning.errors import AnnotationError
from iqa_lightning.models.levels import QALIGN_LEVELS

from ..base import IQADataModule
from ..records import (
    ImageRecord,
    check_unique_key,
    load_json,
    parse_number,
    read_annotation_csv,
)
from ..spec import DatasetSpec
from ..splits import OFFICIAL_SPLIT_NAMES

__all__ = ["IMAGE_KEYS", "SCORE_KEYS", "SPLIT_KEYS", "STD_KEYS", "TableDataModule"]

logger = logging.getLogger("iqa_lightning.data")

IMAGE_KEYS = ("img_path", "image", "image_name", "img_name", "name", "filename", "dist_img")
SCORE_KEYS = ("gt_score", "mos", "MOS", "score", "dmos", "mos_quality")
STD_KEYS = ("std", "SD", "sd", "mos_std", "std_quality")
SPLIT_KEYS = ("split", "set")
#: Q-Align's record ids: ``"<image name>-><score>"``.
QALIGN_ID_SEPARATOR = "->"
#: ``dataset.levels_from``: None (the level losses bin the score) or ``answer``.
LEVELS_FROM = (None, "answer")
#: Who answers in a conversation record (Q-Align / LLaVA's ``gpt``; other exports' names).
ANSWERERS = ("gpt", "assistant")
_AUTO = "auto"


class TableDataModule(IQADataModule):
    """Images with scores listed in one CSV or JSON file.

    Args:
        file: The CSV (``.csv``) or JSON (``.json``) file (config key ``dataset.file``).
        root: Folder the image paths are relative to; None: the file's folder.
        image_key: Column / key of the image path; ``"auto"``: the first of :data:`IMAGE_KEYS`.
        score_key: Column / key of the score; ``"auto"``: the first of :data:`SCORE_KEYS`, else
            the score in Q-Align's ``id`` (``"<name>-><score>"``).
        std_key: Column / key of the score's standard deviation (kept as
            ``ImageRecord.mos_std``); ``"auto"``: the first of :data:`STD_KEYS` if any; None.
        ref_key: Column / key of the reference image, for datasets made by distorting
            references (enables ``split="reference_disjoint"``); None.
        split_key: Column / key of each image's split (train / val / test, also training /
            validation / testing); ``"auto"``: ``split`` or ``set`` if present; None: ignore.
        mos_range: (lo, hi) of the score scale; None: the data's min and max (logged).
        higher_better: Whether a higher score means better quality (False for DMOS).
        higher_is_better: Another name for ``higher_better``; when not None it wins.
        split: ``"auto"``: ``official`` (the split column) when ``split_key`` finds one, else
            ``reference_disjoint`` with ``ref_key``, else ``random`` (seeded, ``split_ratios``);
            or any strategy of :mod:`~iqa_lightning.data.splits`.
        levels_from: ``"answer"``: each record's level word (excellent .. bad) from its
            conversation's last answer (a JSON conversation file); None: the level losses bin
            the score (``module.levels``).
        **kwargs: :class:`~iqa_lightning.data.base.IQADataModule` arguments.
    """

    spec = DatasetSpec(name="table", title="score table")

    def __init__(
        self,
        file: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        image_key: str = _AUTO,
        score_key: str = _AUTO,
        std_key: str | None = _AUTO,
        ref_key: str | None = None,
        split_key: str | None = _AUTO,
        mos_range: Sequence[float] | None = None,
        higher_better: bool = True,
        higher_is_better: bool | None = None,
        split: str = _AUTO,
        levels_from: str | None = None,
        **kwargs,
    ):
        if levels_from not in LEVELS_FROM:
            raise ValueError(
                f"dataset.levels_from={levels_from!r} must be one of {list(LEVELS_FROM)}"
            )
        if file is None or not str(file).strip():
            raise ValueError("dataset.file must name the CSV or JSON file of images and scores")
        self.file = Path(os.path.expanduser(str(file)))
        if self.file.suffix.lower() not in (".csv", ".json"):
            raise ValueError(f"dataset.file must be a .csv or .json file, got '{self.file}'")
        if levels_from == "answer" and self.file.suffix.lower() != ".json":
            raise ValueError(
                f"dataset.levels_from=answer reads the answers of a JSON conversation file; "
                f"dataset.file '{self.file}' is a CSV"
            )
        root = self.file.parent if root is None else root
        if higher_is_better is not None:
            higher_better = higher_is_better
        self.infer_mos_range = mos_range is None
        super().__init__(
            root=root,
            mos_range=(0.0, 1.0) if mos_range is None else mos_range,
            higher_better=higher_better,
            split="random" if split == _AUTO else split,
            **kwargs,
        )
        self.auto_split = split == _AUTO
        self.image_key = image_key
        self.score_key = score_key
        self.std_key = std_key
        self.ref_key = ref_key
        self.split_key = split_key
        self.levels_from = levels_from

    def read_records(self) -> list[ImageRecord]:
        """Read and check every row of :attr:`file`."""
        if not self.file.is_file():
            what = "is a folder, not a file" if self.file.is_dir() else "does not exist"
            raise FileNotFoundError(f"{self.name}: dataset.file '{self.file}' {what}")
        if self.file.suffix.lower() == ".json":
            rows, unit = _json_rows(self.file), "record"
        else:
            rows, unit = _csv_rows(self.file), "line"
        keys = self._keys(rows)
        records = []
        first_seen: dict[str, int] = {}
        for number, row in rows:
            where = f"{self.file}, {unit} {number}"
            image = _image(row, keys["image"], where)
            check_unique_key(first_seen, keys["image"], image, str(self.file), unit, number)
            records.append(
                ImageRecord(
                    image_id=image,
                    path=self.root / image,
                    mos_raw=self._score(row, keys["score"], where),
                    ref_id=_text(row, keys["ref"], where) if keys["ref"] else None,
                    official_split=_split(row, keys["split"], where) if keys["split"] else None,
                    level=_answer_level(row, where) if self.levels_from == "answer" else None,
                    mos_std=parse_number(where, keys["std"], _get(row, keys["std"], where))
                    if keys["std"]
                    else None,
                )
            )
        if self.auto_split:
            self.split = (
                "official" if keys["split"] else "reference_disjoint" if keys["ref"] else "random"
            )
        if self.infer_mos_range:
            self.mos_range = self._inferred_range(records)
        return records

    def _keys(self, rows: list[tuple[int, dict]]) -> dict[str, str | None]:
        present: dict[str, None] = {}
        for _, row in rows:
            present.update(dict.fromkeys(row))
        keys = {
            "image": self._key("image_key", self.image_key, IMAGE_KEYS, present, required=True),
            "score": self._key("score_key", self.score_key, SCORE_KEYS, present, required=False),
            "std": self._key("std_key", self.std_key, STD_KEYS, present, required=False),
            "ref": self._key("ref_key", self.ref_key, (), present, required=False),
            "split": self._key("split_key", self.split_key, SPLIT_KEYS, present, required=False),
        }
        if keys["score"] is None:
            if not all(isinstance(row.get("id"), str) for _, row in rows):
                raise AnnotationError(
                    f"{self.file}: no score key: none of {list(SCORE_KEYS)} is among its "
                    f"keys {list(present)}; set dataset.score_key"
                )
            keys["score"] = QALIGN_ID_SEPARATOR
        logger.info(
            "%s: reading %s: image from '%s', score from %s%s%s%s",
            self.name,
            self.file,
            keys["image"],
            "Q-Align's id ('<name>-><score>')"
            if keys["score"] == QALIGN_ID_SEPARATOR
            else f"'{keys['score']}'",
            f", std from '{keys['std']}'" if keys["std"] else "",
            f", reference from '{keys['ref']}'" if keys["ref"] else "",
            f", split from '{keys['split']}'" if keys["split"] else "",
        )
        return keys

    def _key(self, setting, value, candidates, present, required: bool) -> str | None:
        if value is None:
            return None
        if value != _AUTO:
            if value not in present:
                raise AnnotationError(
                    f"{self.file}: has no column / key '{value}' (dataset.{setting}); its keys "
                    f"are {list(present)}"
                )
            return value
        found = next((key for key in candidates if key in present), None)
        if found is None and required:
            raise AnnotationError(
                f"{self.file}: no image key: none of {list(candidates)} is among its keys "
                f"{list(present)}; set dataset.{setting}"
            )
        return found

    def _score(self, row: dict, key: str, where: str) -> float:
        if key != QALIGN_ID_SEPARATOR:
            return parse_number(where, key, _get(row, key, where))
        record_id = row.get("id")
        if not isinstance(record_id, str) or QALIGN_ID_SEPARATOR not in record_id:
            raise AnnotationError(
                f"{where}: has no score: no {list(SCORE_KEYS)} key and its 'id' {record_id!r} "
                "is not Q-Align's '<name>-><score>'; set dataset.score_key"
            )
        return parse_number(where, "id", record_id.rsplit(QALIGN_ID_SEPARATOR, 1)[1])

    def _inferred_range(self, records: Sequence[ImageRecord]) -> tuple[float, float]:
        lo = min(r.mos_raw for r in records)
        hi = max(r.mos_raw for r in records)
        if not lo < hi:
            raise AnnotationError(
                f"{self.name}: all {len(records)} scores in {self.file} are {lo:g}, so no score "
                "range can be inferred; set dataset.mos_range"
            )
        logger.info(
            "%s: dataset.mos_range inferred from the data: [%g, %g] (min and max of %d scores "
            "in %s); set dataset.mos_range to the scale of the scores to fix it",
            self.name,
            lo,
            hi,
            len(records),
            self.file,
        )
        return lo, hi


def _csv_rows(path: Path) -> list[tuple[int, dict]]:
    _, rows = read_annotation_csv(path, required=())
    return [(row.line, row.values) for row in rows]


def _answer_level(row: dict, where: str) -> int:
    """The level index (0 = excellent) of the last word of a record's last assistant answer."""
    turns = row.get("conversations")
    answers = [
        t.get("value") for t in turns or [] if isinstance(t, dict) and t.get("from") in ANSWERERS
    ]  # fmt: skip
    if not answers or not isinstance(answers[-1], str):
        raise AnnotationError(
            f"{where}: dataset.levels_from=answer, but the record has no answer (no "
            f"'conversations' turn from {list(ANSWERERS)} with a text 'value')"
        )
    words = re.findall(r"[A-Za-z]+", answers[-1])
    word = words[-1].lower() if words else ""
    if word not in QALIGN_LEVELS:
        raise AnnotationError(
            f"{where}: dataset.levels_from=answer, but its answer {answers[-1]!r} ends with "
            f"{word!r}, not a level word ({', '.join(QALIGN_LEVELS)})"
        )
    return QALIGN_LEVELS.index(word)


def _json_rows(path: Path) -> list[tuple[int, dict]]:
    data = load_json(path)
    if not isinstance(data, list) or not data:
        what = "an empty list" if data == [] else type(data).__name__
        raise AnnotationError(f"{path}: expected a JSON list of records, got {what}")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise AnnotationError(
                f"{path}, record {index}: must be a JSON object, got {type(record).__name__}"
            )
    return list(enumerate(data))


def _get(row: dict, key: str, where: str):
    if key not in row:
        raise AnnotationError(f"{where}: has no '{key}' (keys: {list(row)})")
    return row[key]


def _text(row: dict, key: str, where: str) -> str:
    value = _get(row, key, where)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise AnnotationError(f"{where}, key '{key}': expected text, got {value!r}")
    text = str(value).strip()
    if not text:
        raise AnnotationError(f"{where}, key '{key}': value is empty")
    return text


def _image(row: dict, key: str, where: str) -> str:
    value = _get(row, key, where)
    if isinstance(value, list):
        raise AnnotationError(
            f"{where}, key '{key}': holds {len(value)} image paths; a score table needs one "
            "image per row (pair records belong to instruction data)"
        )
    if isinstance(value, str) and not value.strip():
        raise AnnotationError(f"{where}, key '{key}': value is empty")
    if not isinstance(value, str):
        raise AnnotationError(f"{where}, key '{key}': expected an image path, got {value!r}")
    return value.strip()


def _split(row: dict, key: str, where: str) -> str:
    value = _text(row, key, where)
    name = OFFICIAL_SPLIT_NAMES.get(value.lower())
    if name is None:
        raise AnnotationError(
            f"{where}, key '{key}': split {value!r} is not one of {sorted(OFFICIAL_SPLIT_NAMES)}"
        )
    return name
