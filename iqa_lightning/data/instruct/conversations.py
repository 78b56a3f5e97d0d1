"""Instruction conversations about image quality, in Q-Instruct's (LLaVA's) JSON format.

Q-Instruct (Wu et al., CVPR 2024; huggingface.co/datasets/teowu/Q-Instruct, file
``cleaned_labels.json``) uses LLaVA's instruction-tuning layout: a JSON list of records ::

    {"id": "...", "image": "spaq_koniq/00001.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nHow is the clarity?"},
                       {"from": "gpt", "value": "The clarity is poor ..."}, ...]}

``image`` is relative to the image folder (LLaVA's ``--image_folder``). The ``<image>``
placeholder (mPLUG-Owl2's ``<|image|>`` in Q-Align's and DeQA-Score's files) marks where the
picture goes; LLaVA moves it to the front of the first human turn, so here it may only stand at
the start (``<image>\\n...``) or the end (``...\\n<|image|>``) of that turn. Data stays text +
pixels: the placeholder is removed and each backbone adapter inserts its own image tokens with
its own chat template.

Records about two or more images (``"image": [path, path]``, e.g. the 272 image pairs of
Q-Align's KADID conversation file) are skipped, counted, logged once and listed in
``RecordList.skipped``; an ``image`` list of one path is that image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from iqa_lightning.errors import InstructFormatError

from ..checks import warn_skipped
from ..images import image_problems, image_to_tensor, load_rgb
from ..records import load_json

__all__ = [
    "IMAGE_PLACEHOLDER",
    "IMAGE_PLACEHOLDERS",
    "Conversation",
    "InstructDataset",
    "InstructFormatError",
    "MissingImageError",
    "RecordList",
    "collate_instruct",
    "image_field",
    "read_qinstruct",
    "record_id_or",
    "record_where",
]

logger = logging.getLogger("iqa_lightning.data")

IMAGE_PLACEHOLDER = "<image>"
#: Placeholders accepted in the first human turn: LLaVA's and mPLUG-Owl2's.
IMAGE_PLACEHOLDERS = (IMAGE_PLACEHOLDER, "<|image|>")
ROLES = ("human", "gpt")
BAD_IMAGE_MODES = ("error", "skip")
_SHOW_AT_MOST = 5


class MissingImageError(InstructFormatError, FileNotFoundError):
    """Records point to image files that do not exist (also a ``FileNotFoundError``)."""


class RecordList(list):
    """A list of records that also lists what was skipped.

    Attributes:
        skipped: ``(record_id, path, reason)`` of every record dropped because of a bad image in
            ``on_bad_image="skip"`` mode.
    """

    def __init__(self, records=(), skipped: Sequence[tuple[str, str, str]] = ()):
        super().__init__(records)
        self.skipped = list(skipped)


@dataclass(frozen=True)
class Conversation:
    """One image with a dialogue about it.

    Attributes:
        record_id: The record's ``id`` (or ``<image>#<index>`` when the file gives none).
        image_path: The image file.
        turns: (question, answer) pairs in order; the ``<image>`` placeholder is removed.
    """

    record_id: str
    image_path: Path
    turns: list[tuple[str, str]]


def read_qinstruct(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    on_bad_image: str = "error",
) -> RecordList:
    """Read and validate a Q-Instruct / LLaVA conversation file.

    Checks, each failing with an :class:`InstructFormatError` that names the file, the record
    index and id: the record is an object with an ``image`` and a non-empty ``conversations``
    list; roles alternate ``human`` / ``gpt`` starting with ``human`` and ending with ``gpt``;
    every value is a string and no answer is empty; the first human turn holds exactly one
    ``<image>`` (or ``<|image|>``) at its start or end and no later turn holds one. Records with
    two or more images are skipped and listed in ``.skipped`` (reason ``"N images in one
    record"``).

    Args:
        json_path: The JSON file (a list of records).
        image_root: Folder the ``image`` paths are relative to.
        on_bad_image: ``"error"`` raises :class:`MissingImageError` listing records whose image
            file is missing; ``"skip"`` drops records whose image is missing or undecodable,
            logs a warning and lists them in ``.skipped``.

    Raises:
        InstructFormatError: A malformed record, or every record holds several images.

    Returns:
        The conversations in file order, as a :class:`RecordList`.
    """
    json_path = Path(json_path)
    records = load_json_list(json_path)
    conversations = []
    several: list[tuple[str, str, str]] = []
    for index, record in enumerate(records):
        where = record_where(json_path, index, record)
        images = _images(record, "image", where)
        if len(images) > 1:
            reason = f"{len(images)} images in one record (multi-image records are not supported)"
            several.append((record_id_or(record, f"record {index}"), " | ".join(images), reason))
            continue
        turns = _turns(record, where)
        record_id = record_id_or(record, f"{images[0]}#{index}")
        conversations.append(Conversation(record_id, join_image(image_root, images[0]), turns))
    if several:
        logger.warning(
            "%s: skipped %d of %d record(s) with two or more images (not supported), e.g. %s",
            json_path,
            len(several),
            len(records),
            ", ".join(repr(record_id) for record_id, _, _ in several[:_SHOW_AT_MOST]),
        )
    if not conversations:
        raise InstructFormatError(
            f"{json_path}: every one of its {len(records)} record(s) holds two or more images; "
            "multi-image records are not supported"
        )
    kept = check_images(json_path, conversations, on_bad_image)
    return RecordList(kept, several + kept.skipped)


class InstructDataset(Dataset):
    """Decodes and resizes the image of each conversation.

    Items are dicts: ``pixels`` float32 [3, S, S] in [0, 1] (not normalised), ``turns``
    list[(question, answer)], ``record_id`` str.

    Args:
        conversations: Conversations, e.g. from :func:`read_qinstruct`.
        image_size: Output height and width.
    """

    def __init__(self, conversations: Sequence[Conversation], image_size: int):
        self.conversations = list(conversations)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> dict:
        conversation = self.conversations[index]
        return {
            "pixels": image_to_tensor(load_rgb(conversation.image_path), self.image_size),
            "turns": list(conversation.turns),
            "record_id": conversation.record_id,
        }


def collate_instruct(items: Sequence[dict]) -> dict:
    """Stack ``pixels`` into [B, 3, S, S]; keep ``turns`` and ``record_id`` as lists."""
    return {
        "pixels": torch.stack([item["pixels"] for item in items]),
        "turns": [item["turns"] for item in items],
        "record_id": [item["record_id"] for item in items],
    }


def join_image(root: str | os.PathLike, image: str) -> Path:
    """``root / image`` with ``..`` and ``.`` resolved lexically (no file system access)."""
    return Path(os.path.normpath(Path(root) / image))


def load_json_list(path: Path) -> list:
    """Load a JSON file whose top level is a list, with errors that name the file."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"annotation file '{path}' {what}")
    data = load_json(path, InstructFormatError)
    if not isinstance(data, list):
        raise InstructFormatError(
            f"{path}: the top level must be a list of records, got {type(data).__name__}"
        )
    if not data:
        raise InstructFormatError(f"{path}: the file lists no records")
    return data


def check_images(json_path: Path, records: list, on_bad_image: str) -> RecordList:
    """Check the image file of every record (``image_path`` attribute) as ``on_bad_image`` says.

    Returns:
        The kept records, with the dropped ones in ``.skipped``.

    Raises:
        MissingImageError: Image files are missing and ``on_bad_image="error"``.
        InstructFormatError: Every record was skipped.
    """
    if on_bad_image not in BAD_IMAGE_MODES:
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    paths = sorted({str(r.image_path) for r in records})
    missing = {p for p in paths if not Path(p).is_file()}
    if missing and on_bad_image == "error":
        bad = [(i, r) for i, r in enumerate(records) if str(r.image_path) in missing]
        shown = "\n  ".join(
            f"record {i} (id '{r.record_id}'): {r.image_path}" for i, r in bad[:_SHOW_AT_MOST]
        )
        more = f"\n  ... and {len(bad) - _SHOW_AT_MOST} more" if len(bad) > _SHOW_AT_MOST else ""
        raise MissingImageError(
            f"{json_path}: {len(bad)} of {len(records)} record(s) point to missing image "
            f"files:\n  {shown}{more}\nCheck the image root, or set on_bad_image=skip to drop them"
        )
    if on_bad_image == "error":
        return RecordList(records)
    reasons = dict.fromkeys(missing, "file does not exist")
    present = [p for p in paths if p not in missing]
    for path, why in zip(present, image_problems(present), strict=True):
        if why:
            reasons[path] = why
    kept = [r for r in records if str(r.image_path) not in reasons]
    skipped = [
        (r.record_id, str(r.image_path), reasons[str(r.image_path)])
        for r in records
        if str(r.image_path) in reasons
    ]
    if skipped:
        warn_skipped(json_path, "record(s) with a bad image", skipped, len(records))
    if not kept:
        raise InstructFormatError(
            f"{json_path}: every record was skipped because of bad images; first: "
            f"{skipped[0][1]} ({skipped[0][2]})"
        )
    return RecordList(kept, skipped)


def record_where(path: Path, index: int, record) -> str:
    """``"<path>, record <index>"`` (with the record's id when it has one), for messages."""
    if isinstance(record, dict) and "id" in record:
        return f"{path}, record {index} (id {str(record['id'])!r})"
    return f"{path}, record {index}"


def record_id_or(record: dict, default: str) -> str:
    """The record's ``id`` as text, or ``default`` when it has none or an empty one."""
    value = record.get("id")
    return default if value is None or str(value).strip() == "" else str(value)


def _images(record, key: str, where: str) -> list[str]:
    """The record's image paths: one for a path, every path for a list of them."""
    if isinstance(record, dict) and isinstance(record.get(key), list):
        paths = record[key]
        if not paths:
            raise InstructFormatError(f"{where}: '{key}' is an empty list")
        for position, path in enumerate(paths):
            if not isinstance(path, str) or not path.strip():
                raise InstructFormatError(
                    f"{where}: '{key}'[{position}] must be a non-empty path, got {path!r}"
                )
        return [path.strip() for path in paths]
    return [image_field(record, key, where)]


def image_field(record, key: str, where: str) -> str:
    """The image path of a record's ``key``, stripped; raises when it is not a non-empty text."""
    if not isinstance(record, dict):
        raise InstructFormatError(f"{where}: must be a JSON object, got {type(record).__name__}")
    if key not in record:
        raise InstructFormatError(
            f"{where}: has no '{key}' key (keys: {sorted(record)}); every record needs an image"
        )
    image = record[key]
    if not isinstance(image, str) or not image.strip():
        raise InstructFormatError(f"{where}: '{key}' must be a non-empty path, got {image!r}")
    return image.strip()


def _turns(record: dict, where: str) -> list[tuple[str, str]]:
    messages = record.get("conversations")
    if not isinstance(messages, list) or not messages:
        raise InstructFormatError(f"{where}: 'conversations' must be a non-empty list")
    texts = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or "from" not in message or "value" not in message:
            raise InstructFormatError(
                f"{where}: conversations[{position}] must be an object with 'from' and 'value'"
            )
        expected = ROLES[position % 2]
        if message["from"] != expected:
            raise InstructFormatError(
                f"{where}: conversations[{position}] is from {message['from']!r}, expected "
                f"{expected!r}; roles must alternate human / gpt starting with human"
            )
        if not isinstance(message["value"], str):
            raise InstructFormatError(
                f"{where}: conversations[{position}] value must be text, got "
                f"{type(message['value']).__name__}"
            )
        texts.append(message["value"])
    if len(texts) % 2:
        raise InstructFormatError(
            f"{where}: the last turn is a question from 'human' without a 'gpt' answer"
        )
    texts[0] = _strip_placeholder(texts[0], where)
    turns = []
    for position in range(0, len(texts), 2):
        question, answer = texts[position], texts[position + 1]
        for offset, text in ((0, question), (1, answer)):
            held = next((p for p in IMAGE_PLACEHOLDERS if p in text), None)
            if held is not None:
                raise InstructFormatError(
                    f"{where}: conversations[{position + offset}] holds {held!r}; only the "
                    "first human turn may"
                )
        if not answer.strip():
            raise InstructFormatError(f"{where}: conversations[{position + 1}] answer is empty")
        if not question.strip():
            raise InstructFormatError(f"{where}: conversations[{position}] question is empty")
        turns.append((question.strip(), answer.strip()))
    return turns


def _strip_placeholder(text: str, where: str) -> str:
    counts = {p: text.count(p) for p in IMAGE_PLACEHOLDERS}
    count = sum(counts.values())
    if count != 1:
        what = "has no" if count == 0 else f"has {count}"
        raise InstructFormatError(
            f"{where}: the first human turn {what} {IMAGE_PLACEHOLDER!r} placeholder(s) (or "
            f"{' or '.join(map(repr, IMAGE_PLACEHOLDERS[1:]))}); it needs exactly one"
        )
    placeholder = next(p for p, n in counts.items() if n)
    stripped = text.strip()
    if stripped.startswith(placeholder):
        return stripped[len(placeholder) :]
    if stripped.endswith(placeholder):
        return stripped[: -len(placeholder)]
    raise InstructFormatError(
        f"{where}: {placeholder!r} must stand at the start or the end of the first human "
        f"turn, found it inside: {text[:80]!r}"
    )
