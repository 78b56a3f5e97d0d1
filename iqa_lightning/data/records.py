"""Image records and strict readers for annotation CSV and JSON files.

Every error names the file and, where it applies, the 1-based line, the column and the bad
value, so a broken annotation file can be fixed without a debugger.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iqa_lightning.errors import AnnotationError

__all__ = [
    "AnnotationError",
    "AnnotationRow",
    "ImageRecord",
    "check_unique_key",
    "load_json",
    "parse_line_number",
    "parse_number",
    "read_annotation_csv",
    "read_csv_rows",
    "write_csv",
]


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image.

    Attributes:
        image_id: Unique name of the image inside its dataset (usually the file name).
        path: Absolute or root-relative path of the image file.
        mos_raw: Score exactly as the annotation file gives it.
        ref_id: Reference (pristine source) the image was made from, for datasets built by
            distorting references; None for authentic-distortion datasets.
        official_split: The dataset's own split name for this image (e.g. ``"training"``),
            if it publishes one.
        source_split: The split a split source selected in the config gives this image, besides
            the dataset's own (the pyiqa reader fills it from a split column of pyiqa's
            meta-info CSV or from a split pickle); used by ``split="pyiqa"``.
        mos_std: Standard deviation of the ratings behind ``mos_raw``, on its scale, where the
            annotation file gives one (e.g. ``dataset=table`` with ``std_key``); else None.
        rating_counts: The histogram of the ratings over the rating scale's levels, worst
            first (KonIQ-10k's ``c1 .. c5``: counts or fractions), where the file gives one.
        level: The level word the annotation file's answer gives the image, as an index of
            excellent, good, fair, poor, bad (0 = best), where it gives one
            (``dataset=table dataset.levels_from=answer``: Q-Align's training JSONs).
    """

    image_id: str
    path: Path
    mos_raw: float
    ref_id: str | None = None
    official_split: str | None = None
    source_split: str | None = None
    mos_std: float | None = None
    rating_counts: tuple[float, ...] | None = None
    level: int | None = None


@dataclass(frozen=True)
class AnnotationRow:
    """One data row of an annotation CSV.

    Attributes:
        line: 1-based line number in the file where the row starts.
        values: Column name to stripped cell text.
        numbers: Column name to parsed float, for the numeric columns that were requested.
    """

    line: int
    values: dict[str, str]
    numbers: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, column: str) -> str:
        return self.values[column]


def read_annotation_csv(
    path: str | os.PathLike,
    required: Sequence[str],
    numeric: Iterable[str] = (),
    unique: str | None = None,
) -> tuple[list[str], list[AnnotationRow]]:
    """Read a CSV annotation file and validate it.

    Checks that the header has every required column, that no row repeats the header (an
    extra or duplicated header row, e.g. from concatenated files), that each row has as many
    cells as the header, that numeric columns hold finite numbers, and that the ``unique``
    column has no duplicates. Blank lines are ignored; a UTF-8 byte-order mark is accepted.

    Args:
        path: CSV file.
        required: Columns that must be present.
        numeric: Columns (a subset of ``required``) that must parse as finite floats.
        unique: Column whose values must not repeat (the image name).

    Returns:
        The header (stripped column names) and the data rows in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: The file is malformed; the message names the file, line, column and
            value at fault.
    """
    path = Path(path)
    raw_rows = read_csv_rows(path, "annotation file", utf8_hint="; save it as UTF-8")
    numeric = list(numeric)
    if not raw_rows:
        raise AnnotationError(f"{path}: file is empty; expected a header with columns {required}")

    header_line, header_cells = raw_rows[0]
    header = [cell.strip() for cell in header_cells]
    _check_header(path, header_line, header, required, numeric, raw_rows[1:6])

    rows: list[AnnotationRow] = []
    first_seen: dict[str, int] = {}
    for line, cells in raw_rows[1:]:
        cells = [cell.strip() for cell in cells]
        if cells == header or (required and set(required) <= set(cells)):
            raise AnnotationError(
                f"{path}, line {line}: repeats the header row ({','.join(cells)}); "
                "remove the extra header line (files concatenated with their headers?)"
            )
        if len(cells) != len(header):
            raise AnnotationError(
                f"{path}, line {line}: has {len(cells)} fields but the header has "
                f"{len(header)} ({', '.join(header)}); check for unquoted commas or a "
                "missing value"
            )
        values = dict(zip(header, cells, strict=True))
        numbers = {
            column: parse_line_number(path, line, column, values[column]) for column in numeric
        }
        if unique is not None:
            check_unique_key(first_seen, unique, values[unique], str(path), "line", line)
        rows.append(AnnotationRow(line=line, values=values, numbers=numbers))
    if not rows:
        raise AnnotationError(f"{path}: has a header but no data rows")
    return header, rows


def load_json(path: Path, error: type[Exception] = AnnotationError):
    """The parsed content of a JSON file (UTF-8, a byte-order mark allowed).

    Args:
        path: The file.
        error: What is raised for a file that is not valid UTF-8 text or not valid JSON (the
            caller's own annotation error).

    Raises:
        error: Naming the file, and the line and column of a JSON syntax error.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise error(f"{path}: not valid UTF-8 text ({err})") from err
    except json.JSONDecodeError as err:
        raise error(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err


def read_csv_rows(path: Path, what: str, utf8_hint: str = "") -> list[tuple[int, list[str]]]:
    """Every non-blank row of a CSV file as ``(first line number, cells)``.

    Args:
        path: The file.
        what: What the file is, for the not-found message (``"annotation file"``).
        utf8_hint: Appended to the message for text that is not UTF-8.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: The file is not UTF-8 text or not CSV.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: '{path}'")
    try:
        return list(_read_rows(path))
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not valid UTF-8 text ({err}){utf8_hint}") from err
    except csv.Error as err:
        raise AnnotationError(f"{path}: cannot parse as CSV ({err})") from err


def _read_rows(path: Path):
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        previous_end = 0
        for cells in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if not cells or all(cell.strip() == "" for cell in cells):
                continue
            yield start, cells


def _check_header(
    path: Path,
    line: int,
    header: list[str],
    required: Sequence[str],
    numeric: list[str],
    following: list[tuple[int, list[str]]],
) -> None:
    missing = [column for column in required if column not in header]
    if missing:
        hint = ""
        for later_line, cells in following:
            if set(required) <= {cell.strip() for cell in cells}:
                hint = (
                    f"; the expected header appears on line {later_line}, so remove the "
                    f"extra line(s) above it"
                )
                break
        raise AnnotationError(
            f"{path}: missing required column(s) {missing}; the header on line {line} has "
            f"columns {header}{hint}"
        )
    repeated = sorted({column for column in header if column and header.count(column) > 1})
    if repeated:
        raise AnnotationError(f"{path}, line {line}: header repeats column(s) {repeated}")
    unknown_numeric = [column for column in numeric if column not in header]
    if unknown_numeric:
        raise AnnotationError(f"{path}: numeric column(s) {unknown_numeric} not in the header")


def check_unique_key(
    seen: dict[str, int], column: str, key: str, where: str, unit: str, number: int
) -> None:
    """Record ``key`` as seen at ``number``; raise when it is empty or was seen before.

    Args:
        seen: Key to the line / row it was first seen on; updated in place.
        column: Name of the unique column.
        key: This row's value of that column.
        where: The file (and sheet), for the message.
        unit: ``"line"`` or ``"row"``.
        number: This row's line / row number.
    """
    if key == "":
        raise AnnotationError(f"{where}, {unit} {number}: column '{column}' is empty")
    if key in seen:
        raise AnnotationError(
            f"{where}: duplicate {column} '{key}' on {unit}s {seen[key]} and {number}"
        )
    seen[key] = number


def parse_line_number(path: Path, line: int, column: str, text: str) -> float:
    """One cell of line ``line`` of ``path`` as a finite float (:func:`parse_number`)."""
    return parse_number(f"{path}, line {line}", column, text, " (NaN or infinity)")


def parse_number(where: str, column: str, value, non_finite_hint: str = "") -> float:
    """Parse one cell (text, a number or None) as a finite float.

    Args:
        where: File and line / row, for the message.
        column: The cell's column.
        value: The cell; booleans are not numbers.
        non_finite_hint: Appended to the message for NaN and infinity.

    Raises:
        AnnotationError: Empty, not a number, or not finite.
    """
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise AnnotationError(f"{where}, column '{column}': value is empty")
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}, column '{column}': {value!r} is not a number") from None
    if not math.isfinite(number):
        raise AnnotationError(
            f"{where}, column '{column}': {value!r} is not a finite number{non_finite_hint}"
        )
    return number


def write_csv(path: str | os.PathLike, default_name: str, header: Sequence[str], rows) -> Path:
    """Write a table as CSV with a header row.

    Args:
        path: The file; an existing folder gets ``default_name`` inside.
        default_name: File name used when ``path`` is a folder.
        header: Column names.
        rows: Data rows.

    Returns:
        The file written (its parent folders are created).
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
