"""Teacher texts for RALI distillation (arXiv 2510.11369): one text per training image.

Texts live in a JSONL file, one object per line, keyed by image id::

    {"image_id": "I01_03_02.png", "text": "The image is blurry ..."}

:class:`TextCache` is the resumable store the teacher writes into: each flush appends its lines
in one ``write`` followed by ``fsync``, so an interrupted run leaves at most a torn last line
(dropped, with a warning, when the cache is read back) and never a duplicate; a re-run skips
every image already cached. :func:`read_texts` reads a file the user already has
(``teacher.texts=<jsonl>``) and names the file and line of any bad line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["TextCache", "TextFileError", "check_texts", "read_texts"]


class TextFileError(ValueError):
    """A teacher-text file the run cannot use; the message names the file and line."""


def _parse_line(path: Path, number: int, line: str, allow_empty: bool) -> tuple[str, str]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TextFileError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
    if not isinstance(row, dict):
        raise TextFileError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    image_id, text = row.get("image_id"), row.get("text")
    if not isinstance(image_id, str) or not image_id:
        raise TextFileError(f"{path}:{number}: no string 'image_id'")
    if not isinstance(text, str) or not (allow_empty or text.strip()):
        raise TextFileError(f"{path}:{number}: image {image_id!r} has no text")
    return image_id, text


def read_texts(
    path: str | os.PathLike, torn_tail: bool = False, allow_empty: bool = False
) -> dict[str, str]:
    """Texts by image id from a JSONL file (``image_id``, ``text`` per line; blank lines skipped).

    Args:
        path: The file.
        torn_tail: Drop an unparsable LAST line with a warning (a cache whose writer was
            killed mid-write: the file does not end with a newline) instead of refusing it.
        allow_empty: Accept an empty text (a teacher that answered nothing; its cache only).

    Raises:
        TextFileError: A bad line, an image listed twice, or a missing file (named).
    """
    path = Path(path)
    if not path.is_file():
        raise TextFileError(f"{path}: no such teacher-text file")
    content = path.read_text(encoding="utf-8")
    lines = content.split("\n")
    # Every flush ends with a newline: a last line without one was cut short.
    torn = len(lines) - 1 if torn_tail and not content.endswith("\n") else -1
    texts: dict[str, str] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            image_id, text = _parse_line(path, index + 1, line, allow_empty)
        except TextFileError:
            if index == torn:
                log.warning("%s:%d: dropping a torn last line", path, index + 1)
                continue
            raise
        if image_id in texts:
            raise TextFileError(f"{path}:{index + 1}: image {image_id!r} is listed twice")
        texts[image_id] = text
    return texts


def check_texts(texts: Mapping[str, str], image_ids: Sequence[str], where: str) -> None:
    """Every image has a text.

    Raises:
        TextFileError: Images without a text (the first few named, with ``where``).
    """
    missing = [i for i in image_ids if i not in texts]
    if missing:
        raise TextFileError(
            f"{where}: {len(missing)} of {len(image_ids)} training images have no text "
            f"(first: {', '.join(map(repr, missing[:3]))})"
        )


def _lines(texts: Mapping[str, str]) -> bytes:
    rows = (json.dumps({"image_id": k, "text": v}, ensure_ascii=False) for k, v in texts.items())
    return "".join(row + "\n" for row in rows).encode("utf-8")


class TextCache:
    """An append-only JSONL store of teacher texts, keyed by image id.

    Args:
        path: The JSONL file (created with its folder on the first flush).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.texts: dict[str, str] = {}
        if self.path.exists():
            self.texts = read_texts(self.path, torn_tail=True, allow_empty=True)
            self._repair_tail()

    def _repair_tail(self) -> None:
        """After a torn write, rewrite the file (atomically) from the lines that were whole, so
        the next append starts on a fresh line."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_bytes(_lines(self.texts))
            os.replace(tmp, self.path)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.texts

    def __len__(self) -> int:
        return len(self.texts)

    def missing(self, image_ids: Iterable[str]) -> list[str]:
        """The ids without a cached text, in the given order."""
        return [i for i in image_ids if i not in self.texts]

    def add(self, rows: Mapping[str, str]) -> int:
        """Append texts in one write + fsync; ids already cached are left out.

        Returns:
            How many lines were written.
        """
        new = {k: v for k, v in rows.items() if k not in self.texts}
        if not new:
            return 0
        for image_id, text in new.items():
            if not isinstance(text, str):
                raise TypeError(f"text of {image_id!r} must be a string, got {type(text)}")
        payload = _lines(new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.texts.update(new)
        return len(new)
