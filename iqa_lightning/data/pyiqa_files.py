"""pyiqa's dataset files: the meta-info CSV and the split pickles.

pyiqa (IQA-PyTorch, github.com/chaofengc/IQA-PyTorch) describes each dataset with one
meta-info CSV, ``meta_info_<Name>Dataset.csv``, which it reads by column position:

- no-reference files: ``name, mos, ...``;
- full-reference files: ``ref_name, dist_name, mos, ...``.

Its older releases keep splits in pickles of 0-based row indices of that file
(``{split_index: {"train": [...], "val": [...], "test": [...]}}``). The data module that reads
a dataset through these files is :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule`.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from iqa_lightning.errors import AnnotationError

from .records import check_unique_key, parse_line_number, read_csv_rows

__all__ = ["MetaRow", "read_meta_info", "read_split_pickle"]

_PHASES = ("train", "val", "test")
_KINDS = {"nr": ("name", "mos"), "fr": ("ref_name", "dist_name", "mos")}


@dataclass(frozen=True)
class MetaRow:
    """One data row of a pyiqa meta-info file.

    Attributes:
        index: 0-based data-row number (what pyiqa split pickles index).
        line: 1-based line number in the file.
        name: The image's path relative to the image folder (``dist_name`` of FR files).
        ref_name: The reference image of FR files; None for NR files.
        mos: The score column (second of NR files, third of FR files).
        values: Every cell by column name.
        source: The meta-info file, for error messages.
    """

    index: int
    line: int
    name: str
    ref_name: str | None
    mos: float
    values: dict[str, str]
    source: Path


def read_meta_info(path: str | os.PathLike, kind: str) -> tuple[list[str], list[MetaRow]]:
    """Read a pyiqa meta-info CSV by column position, as pyiqa does.

    Args:
        path: The CSV file.
        kind: ``"nr"`` (``name, mos, ...``) or ``"fr"`` (``ref_name, dist_name, mos, ...``).

    Returns:
        The header and the rows in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: Malformed file; the message names file, line and column.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    path = Path(path)
    raw = read_csv_rows(path, "pyiqa meta-info file")
    if not raw:
        raise AnnotationError(f"{path}: file is empty")
    header_line, header_cells = raw[0]
    header = [cell.strip() for cell in header_cells]
    roles = _KINDS[kind]
    if len(header) < len(roles):
        raise AnnotationError(
            f"{path}, line {header_line}: pyiqa {kind.upper()} meta-info files start with the "
            f"columns ({', '.join(roles)}, ...), but the header has {header}"
        )
    ref_col, name_col, mos_col = (None, 0, 1) if kind == "nr" else (0, 1, 2)
    rows: list[MetaRow] = []
    first_seen: dict[str, int] = {}
    for index, (line, cells) in enumerate(raw[1:]):
        cells = [cell.strip() for cell in cells]
        if cells == header:
            raise AnnotationError(f"{path}, line {line}: repeats the header row")
        if len(cells) != len(header):
            raise AnnotationError(
                f"{path}, line {line}: has {len(cells)} fields but the header has {len(header)}"
            )
        for col in (name_col, ref_col):
            if col is not None and cells[col] == "":
                raise AnnotationError(
                    f"{path}, line {line}, column '{header[col]}': value is empty"
                )
        name = cells[name_col]
        check_unique_key(first_seen, header[name_col], name, str(path), "line", line)
        mos = parse_line_number(path, line, header[mos_col], cells[mos_col])
        ref = cells[ref_col] if ref_col is not None else None
        values = dict(zip(header, cells, strict=True))
        rows.append(MetaRow(index, line, name, ref, mos, values, path))
    if not rows:
        raise AnnotationError(f"{path}: has a header but no data rows")
    return header, rows


class _PlainUnpickler(pickle.Unpickler):
    """Loads only plain containers and numbers: pyiqa split files need no classes."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}; pyiqa split files hold only dicts, lists and "
            "integers"
        )


def read_split_pickle(path: str | os.PathLike, split_index: int, n_rows: int) -> list[str | None]:
    """Read one split of a pyiqa split pickle.

    Args:
        path: The ``.pkl`` file.
        split_index: Key of the split (pyiqa counts from 1).
        n_rows: Number of rows the indices refer to.

    Returns:
        ``"train"``, ``"val"``, ``"test"`` or None (in no part) for each row position.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: Not a pyiqa split file, no such split, or bad row indices.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pyiqa split file not found: '{path}'")
    try:
        with path.open("rb") as handle:
            data = _PlainUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise AnnotationError(f"{path}: not a pyiqa split pickle ({err})") from err
    if not isinstance(data, dict):
        raise AnnotationError(
            f"{path}: expected a dict {{split_index: {{'train': [...], ...}}}}, "
            f"got {type(data).__name__}"
        )
    if split_index not in data:
        raise AnnotationError(
            f"{path}: has no split {split_index!r} (dataset.split_index); it holds splits "
            f"{sorted(data, key=str)}"
        )
    entry = data[split_index]
    where = f"{path}, split {split_index!r}"
    if not isinstance(entry, dict) or set(entry) - set(_PHASES):
        keys = sorted(entry, key=str) if isinstance(entry, dict) else type(entry).__name__
        raise AnnotationError(f"{where}: expected keys among {list(_PHASES)}, got {keys}")
    phases: list[str | None] = [None] * n_rows
    for phase in _PHASES:
        for i in entry.get(phase) or ():
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_rows:
                raise AnnotationError(
                    f"{where}, part '{phase}': row index {i!r} is not one of the {n_rows} "
                    "rows of the meta-info file"
                )
            if phases[i] is not None:
                raise AnnotationError(
                    f"{where}: row index {i} is in both '{phases[i]}' and '{phase}'"
                )
            phases[i] = phase
    return phases
