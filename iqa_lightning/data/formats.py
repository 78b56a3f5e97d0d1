"""Readers for the annotation formats datasets are published in, beyond plain CSV.

- Excel workbooks (SPAQ's ``MOS and Image attribute scores.xlsx``, CSIQ's ``csiq.DMOS.xlsx``),
  read with ``openpyxl``; a CSV export of the same sheet is read by
  :func:`~iqa_lightning.data.records.read_annotation_csv` instead (:func:`read_table` picks by
  suffix). Rows come back as :class:`~iqa_lightning.data.records.AnnotationRow` either way, with
  ``line`` the spreadsheet row number.
- Whitespace-separated text (TID2013's ``mos_with_names.txt``: ``<mos> <image name>`` per line).
- MATLAB ``.mat`` files (LIVE's ``dmos.mat``, LIVE Challenge's ``AllMOS_release.mat``), read
  with ``scipy.io.loadmat``.

Every error names the file and the row / line / variable at fault.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from iqa_lightning.errors import AnnotationError

from .records import (
    AnnotationRow,
    check_unique_key,
    parse_number,
    read_annotation_csv,
)

__all__ = ["load_mat", "mat_strings", "read_table", "read_text_columns", "read_xlsx"]

_HEADER_SEARCH_ROWS = 20


def read_table(
    path: str | os.PathLike,
    required: Sequence[str],
    numeric: Sequence[str] = (),
    unique: str | None = None,
    sheet: str | None = None,
) -> tuple[list[str], list[AnnotationRow]]:
    """Read a label table: one worksheet of an Excel workbook (a ``.xlsx`` path), else a CSV
    file (:func:`~iqa_lightning.data.records.read_annotation_csv`).

    In a workbook the header is the first row (among the first 20) that holds every required
    column, so title rows and empty leading columns (as in ``csiq.DMOS.xlsx``) are fine. Rows
    whose required cells are all empty are padding and skipped. Integral numbers in text
    columns become integer text (an image named ``1600`` stays ``"1600"``, not ``"1600.0"``).

    Args:
        path: ``.xlsx`` or ``.csv`` file.
        required: Columns that must be present.
        numeric: Columns that must hold finite numbers.
        unique: Column whose values must not repeat.
        sheet: Worksheet name of a workbook; the first sheet when None.

    Returns:
        The header (a workbook's empty cells as ``""``) and the data rows, ``line`` being the
        sheet row of a workbook and the line of a CSV file.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: Unreadable workbook, missing sheet or header, bad or repeated values.
    """
    path = Path(path)
    if path.suffix.lower() != ".xlsx":
        return read_annotation_csv(path, required=required, numeric=numeric, unique=unique)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: '{path}'")
    try:
        import openpyxl
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError(f"reading '{path}' needs openpyxl: pip install openpyxl") from err
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises zipfile / xml errors of many kinds
        raise AnnotationError(f"{path}: cannot read as an Excel workbook ({err})") from err
    try:
        if sheet is not None and sheet not in workbook.sheetnames:
            raise AnnotationError(
                f"{path}: has no sheet '{sheet}'; its sheets are {workbook.sheetnames}"
            )
        worksheet = workbook[sheet] if sheet is not None else workbook.worksheets[0]
        where = f"{path}, sheet '{worksheet.title}'"
        cells = [list(row) for row in worksheet.iter_rows(values_only=True)]
    finally:
        workbook.close()
    header_index = next(
        (
            i
            for i, row in enumerate(cells[:_HEADER_SEARCH_ROWS])
            if set(required) <= {_text(cell) for cell in row}
        ),
        None,
    )
    if header_index is None:
        first = [_text(cell) for cell in cells[0]] if cells else []
        raise AnnotationError(
            f"{where}: no row among the first {_HEADER_SEARCH_ROWS} holds the required "
            f"column(s) {list(required)}; the first row is {first}"
        )
    header = [_text(cell) for cell in cells[header_index]]
    columns = {name: header.index(name) for name in required}
    rows: list[AnnotationRow] = []
    first_seen: dict[str, int] = {}
    for offset, row in enumerate(cells[header_index + 1 :], start=header_index + 2):
        row = row + [None] * (len(header) - len(row))
        raw = {name: row[i] for name, i in columns.items()}
        if all(_text(value) == "" for value in raw.values()):
            continue
        values = {name: _text(cell) for name, cell in zip(header, row, strict=False) if name}
        values.update({name: _text(value) for name, value in raw.items()})
        numbers = {
            name: parse_number(f"{where}, row {offset}", name, raw[name]) for name in numeric
        }
        if unique is not None:
            check_unique_key(first_seen, unique, values[unique], where, "row", offset)
        rows.append(AnnotationRow(line=offset, values=values, numbers=numbers))
    if not rows:
        raise AnnotationError(f"{where}: has a header on row {header_index + 1} but no data rows")
    return header, rows


#: Kept for code that names the workbook reader: :func:`read_table` reads a ``.xlsx`` path.
read_xlsx = read_table


def read_text_columns(
    path: str | os.PathLike, columns: Sequence[str], numeric: Sequence[str] = ()
) -> list[AnnotationRow]:
    """Read a headerless whitespace-separated text file with a fixed number of fields.

    Args:
        path: The file (e.g. TID2013's ``mos_with_names.txt``).
        columns: Names given to the fields, in order.
        numeric: Fields that must hold finite numbers.

    Returns:
        One row per non-blank line.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: A line with the wrong number of fields or a bad number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: '{path}'")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not valid UTF-8 text ({err})") from err
    rows = []
    for line_number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(columns):
            raise AnnotationError(
                f"{path}, line {line_number}: expected {len(columns)} fields "
                f"({' '.join(columns)}), got {len(fields)}: {line.strip()!r}"
            )
        values = dict(zip(columns, fields, strict=True))
        numbers = {
            name: parse_number(f"{path}, line {line_number}", name, values[name])
            for name in numeric
        }
        rows.append(AnnotationRow(line=line_number, values=values, numbers=numbers))
    if not rows:
        raise AnnotationError(f"{path}: file is empty")
    return rows


def load_mat(path: str | os.PathLike, variables: Sequence[str]) -> dict[str, np.ndarray]:
    """Load variables from a MATLAB ``.mat`` file.

    Args:
        path: The file.
        variables: Names that must be present.

    Returns:
        Every variable of the file as stored (not flattened).

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: Unreadable file (e.g. MATLAB v7.3) or a missing variable.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: '{path}'")
    try:
        data = loadmat(str(path))
    except NotImplementedError as err:  # v7.3 files are HDF5
        raise AnnotationError(
            f"{path}: MATLAB v7.3 files are not supported ({err}); re-save it with save(..., '-v7')"
        ) from err
    except Exception as err:  # scipy raises MatReadError, ValueError, IndexError, ...
        raise AnnotationError(f"{path}: cannot read as a MATLAB .mat file ({err!r})") from err
    found = sorted(k for k in data if not k.startswith("__"))
    missing = [name for name in variables if name not in data]
    if missing:
        raise AnnotationError(
            f"{path}: has no variable(s) {missing}; the variables in the file are {found}"
        )
    return {name: value for name, value in data.items() if not name.startswith("__")}


def mat_strings(array: np.ndarray, where: str) -> list[str]:
    """The strings of a MATLAB cell array of char arrays (any shape), in storage order.

    Args:
        array: The cell array as loaded by ``scipy.io.loadmat``.
        where: File and variable, for error messages.
    """
    out = []
    for i, item in enumerate(np.asarray(array, dtype=object).reshape(-1, order="F")):
        while isinstance(item, np.ndarray) and item.size == 1:
            item = item.reshape(-1)[0]
        if not isinstance(item, str):
            raise AnnotationError(f"{where}: entry {i + 1} is not a string ({item!r})")
        out.append(item.strip())
    return out


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
