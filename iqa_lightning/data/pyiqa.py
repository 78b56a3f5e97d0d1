"""pyiqa's dataset files, and the base of data modules that read them or the published files.

pyiqa (IQA-PyTorch, github.com/chaofengc/IQA-PyTorch) describes each dataset with one
meta-info CSV, ``meta_info_<Name>Dataset.csv``, which it reads by column position:

- no-reference files: ``name, mos, ...`` (e.g. ``img_name,mos,std`` for LIVE Challenge,
  ``Image name,MOS,...`` for SPAQ);
- full-reference files: ``ref_name, dist_name, mos, ...`` (e.g. ``ref_name,dist_name,dmos`` for
  CSIQ, ``hq_name,dist_name,elo_score`` for PIPAL).

Columns whose name contains ``split`` give each image a split name: ``official_split`` or
``split`` (the dataset's own split; KonIQ-10k's file calls it ``split`` and stores codes, see
:attr:`PyiqaLayoutDataModule.pyiqa_split_codes`) and seeded splits named like
``ratio802_seed123_split_01``. pyiqa's older releases keep splits in pickles instead (e.g.
``live_123.pkl``, ``koniq10k_official.pkl``): ``{split_index: {"train": [...], "val": [...],
"test": [...]}}`` of 0-based row indices of the meta-info file, split indices counted from 1,
``val`` or ``test`` missing or empty for the 8:2 splits.

:class:`PyiqaLayoutDataModule` reads a dataset either as its authors publish it or from pyiqa's
meta-info file (``layout``), and selects a pyiqa split by column or pickle for ``split="pyiqa"``.
:class:`LabelTableDataModule` adds the published layout of one label table beside one image
folder. The file readers live in :mod:`.pyiqa_files` and are re-exported here.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from iqa_lightning.errors import SplitError

from .base import IQADataModule
from .pyiqa_files import MetaRow, read_meta_info, read_split_pickle
from .records import ImageRecord

__all__ = [
    "LAYOUTS",
    "LabelTableDataModule",
    "MetaRow",
    "PyiqaLayoutDataModule",
    "read_meta_info",
    "read_split_pickle",
]

logger = logging.getLogger("iqa_lightning.data")

LAYOUTS = ("auto", "published", "pyiqa")
OFFICIAL_SPLIT_COLUMNS = ("official_split", "split")


class PyiqaLayoutDataModule(IQADataModule):
    """Base of data modules that read a dataset as published or in pyiqa's layout.

    Subclasses declare ``spec`` (a :class:`~.spec.DatasetSpec`: its published ``labels`` and
    ``image_dirs``, ``pyiqa_meta_names``, ``pyiqa_kind`` and the dataset's own ``settings``)
    and implement :meth:`read_published` and :meth:`pyiqa_record`; :meth:`published_markers`
    and :meth:`published_folders` read the spec unless overridden.

    Args:
        root: Dataset folder (config key ``dataset.root``).
        layout: ``"published"`` (the authors' files), ``"pyiqa"`` (pyiqa's meta-info file and
            image folders) or ``"auto"``: published when its label file is there, else pyiqa
            (always pyiqa for ``split="pyiqa"``).
        meta_file: pyiqa meta-info file: ``"auto"`` (the dataset's pyiqa file name) or a path.
            Relative names are looked for in ``root``, ``root/meta_info`` and
            ``root/../meta_info`` (pyiqa keeps them in ``datasets/meta_info``).
        split_column: With ``split="pyiqa"``: the meta-info column to split by, e.g.
            ``official_split`` or ``ratio802_seed123_split_01``. With ``split="column"``: the
            split column of ``split_file`` (see :class:`~.base.IQADataModule`).
        split_file: With ``split="pyiqa"``: a pyiqa split pickle, e.g. ``live_123.pkl``; relative
            names are also looked for in ``train_split_info`` folders. With
            ``split="column"``: a label file with a split column.
        split_index: The split of ``split_file`` to use (pyiqa counts from 1).
        **kwargs: The dataset's own settings (``spec.settings``: each is kept as the attribute
            of its name, its default where not given) and
            :class:`~iqa_lightning.data.base.IQADataModule` arguments.
    """

    #: Codes the dataset's meta-info file uses for split names in its split columns (e.g.
    #: KonIQ-10k's ``0`` / ``1`` / ``2``), mapped to ``train`` / ``val`` / ``test``.
    pyiqa_split_codes: dict[str, str] = {}

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        layout: str = "auto",
        meta_file: str = "auto",
        split_column: str | None = None,
        split_file: str | None = None,
        split_index: int = 1,
        **kwargs,
    ):
        own = {key: kwargs.pop(key, default) for key, default in self.spec.settings.items()}
        super().__init__(root=root, split_column=split_column, split_file=split_file, **kwargs)
        if layout not in LAYOUTS:
            raise ValueError(f"dataset.layout must be one of {list(LAYOUTS)}, got {layout!r}")
        if self.split == "pyiqa":
            if split_column and split_file:
                raise ValueError(
                    "set only one of dataset.split_column and dataset.split_file, got "
                    f"{split_column!r} and {split_file!r}"
                )
            if not (split_column or split_file):
                raise ValueError(
                    "dataset.split=pyiqa needs dataset.split_column (a split column of pyiqa's "
                    "meta-info file, e.g. ratio802_seed123_split_01) or dataset.split_file "
                    "(a pyiqa split pickle) with dataset.split_index"
                )
            if layout == "published":
                raise ValueError(
                    "dataset.split=pyiqa indexes pyiqa's meta-info file; use dataset.layout="
                    "pyiqa or auto"
                )
        if isinstance(split_index, bool) or not isinstance(split_index, int):
            raise ValueError(f"dataset.split_index must be an integer, got {split_index!r}")
        self.layout = layout
        self.meta_file = meta_file
        self.split_index = split_index
        self.resolved_layout: str | None = None
        for key, value in own.items():
            setattr(self, key, value)

    def published_markers(self) -> list[Path]:
        """Label files of the published layout; any one present means it is there
        (``spec.labels`` under ``root``)."""
        return [self.root / name for name in self.spec.labels]

    @abstractmethod
    def read_published(self) -> list[ImageRecord]:
        """Read the published files into records."""

    @abstractmethod
    def pyiqa_record(self, row: MetaRow) -> ImageRecord:
        """Turn one meta-info row into a record (image path, score, reference)."""

    def published_folders(self) -> list[Path]:
        """Image folders of the published layout, listed when no layout is found
        (``spec.image_dirs`` under ``root``)."""
        return [self.root / name for name in self.spec.image_dirs]

    def published_requested(self) -> bool:
        """Whether the config names a published file explicitly (layout ``auto`` then reads
        the published layout)."""
        return False

    def pyiqa_rows(self, rows: list[MetaRow]) -> list[MetaRow]:
        """Rows of the meta-info file in use (pyiqa drops some for some datasets); split
        pickle indices count these rows."""
        return rows

    def require_published(
        self,
        title: str,
        paths: Sequence[Path],
        shown: Sequence[str] | None = None,
        present: Callable[[Path], bool] = Path.is_file,
    ) -> None:
        """Raise unless every file (or folder) of the published layout is there.

        Args:
            title: The dataset's name in the message, e.g. ``"KADID-10k"``.
            paths: The paths that must be there.
            shown: How the message lists ``paths`` (e.g. folders with a trailing ``/``); their
                text by default.
            present: The test each path must pass.

        Raises:
            FileNotFoundError: Some are missing; the message lists all and the missing ones.
        """
        missing = [p for p in paths if not present(p)]
        if missing:
            looked = " and ".join(map(str, paths) if shown is None else shown)
            raise FileNotFoundError(
                f"{self.name}: '{self.root}' is not a {title} folder; looked for "
                f"{looked}, missing: {', '.join(str(p) for p in missing)}"
            )

    def configured_path(self, relative: str, what: str, setting: str, folder: bool = True) -> Path:
        """``root / relative`` for a file or folder the config names, checked to exist.

        Args:
            relative: The configured name under ``root`` (or an absolute path).
            what: What it is, for the message, e.g. ``"image folder"``.
            setting: The config key the message points to, e.g. ``"dataset.image_dir"``.
            folder: Whether it must be a folder (else a file).

        Raises:
            FileNotFoundError: It does not exist (as a folder, or as a file).
        """
        path = self.root / relative
        if not (path.is_dir() if folder else path.is_file()):
            raise FileNotFoundError(f"{self.name}: {what} '{path}' ({setting}) does not exist")
        return path

    def read_records(self) -> list[ImageRecord]:
        """Read the layout chosen by :meth:`resolve_layout`."""
        self.resolved_layout = self.resolve_layout()
        logger.info(
            "%s: reading the %s layout under %s", self.name, self.resolved_layout, self.root
        )
        if self.resolved_layout == "published":
            return self.read_published()
        return self.read_pyiqa()

    def resolve_layout(self) -> str:
        """``"published"`` or ``"pyiqa"``, following ``layout``; raises listing every file
        looked for when neither is there."""
        if self.layout == "published":
            return "published"
        if self.layout == "pyiqa" or self.split == "pyiqa":
            self.meta_path()
            return "pyiqa"
        markers = self.published_markers()
        if self.published_requested() or any(p.exists() for p in markers):
            return "published"
        meta, looked = self._find(self._meta_names(), self._meta_dirs())
        if meta is not None:
            return "pyiqa"
        published = [str(p) for p in markers] + [f"{p}/ (images)" for p in self.published_folders()]
        raise FileNotFoundError(
            f"{self.name}: '{self.root}' holds neither the published label files nor pyiqa's "
            "meta-info file; looked for:\n  published: "
            + "\n             ".join(published)
            + "\n  pyiqa:     "
            + "\n             ".join(str(p) for p in looked)
            + "\nSet dataset.root to the dataset folder, or dataset.meta_file / dataset.layout"
        )

    def meta_path(self) -> Path:
        """The pyiqa meta-info file in use."""
        what = f"pyiqa meta-info file (dataset.meta_file={self.meta_file})"
        return self._locate(self._meta_names(), self._meta_dirs(), what)

    def read_pyiqa(self) -> list[ImageRecord]:
        """Read pyiqa's meta-info file, with the selected pyiqa split when ``split="pyiqa"``."""
        path = self.meta_path()
        header, rows = read_meta_info(path, self.spec.pyiqa_kind)
        rows = self.pyiqa_rows(rows)
        phases: list[str | None] | None = None
        if self.split == "pyiqa" and self.split_column:
            if self.split_column not in header:
                raise SplitError(
                    f"{path}: has no split column '{self.split_column}' (dataset.split_column); "
                    f"its split columns are {[c for c in header if 'split' in c]}"
                )
            phases = [self.split_name(row.values[self.split_column]) for row in rows]
        elif self.split == "pyiqa":
            folders = [*self._meta_dirs(), self.root / "train_split_info"]
            folders.append(self.root.parent / "train_split_info")
            what = f"pyiqa split file (dataset.split_file={self.split_file})"
            split_path = self._locate([self.split_file], folders, what)
            phases = read_split_pickle(split_path, self.split_index, len(rows))
        official = next((c for c in OFFICIAL_SPLIT_COLUMNS if c in header), None)
        records = []
        for position, row in enumerate(rows):
            phase = phases[position] if phases is not None else None
            if phases is not None and phase is None:
                continue
            record = self.pyiqa_record(row)
            official_split = self.split_name(row.values[official]) if official else None
            records.append(replace(record, official_split=official_split, source_split=phase))
        if len(records) < len(rows):
            logger.info(
                "%s: %d of %d rows of %s are in no part of the selected pyiqa split; left out",
                self.name,
                len(rows) - len(records),
                len(rows),
                path,
            )
        return records

    def split_name(self, value: str) -> str | None:
        """A split cell of the meta-info file as a split name: a code of
        :attr:`pyiqa_split_codes` becomes its name, an empty cell None, any other text stays."""
        value = value.strip()
        return self.pyiqa_split_codes.get(value, value) or None

    def _meta_names(self) -> list[str]:
        return list(self.spec.pyiqa_meta_names) if self.meta_file == "auto" else [self.meta_file]

    def _meta_dirs(self) -> list[Path]:
        return [self.root, self.root / "meta_info", self.root.parent / "meta_info"]

    def _locate(self, names: Sequence[str], folders: Sequence[Path], what: str) -> Path:
        found, looked = self._find(names, folders)
        if found is None:
            raise FileNotFoundError(
                f"{self.name}: no {what}; looked for:\n  " + "\n  ".join(map(str, looked))
            )
        return found

    def _find(self, names: Sequence[str], folders: Sequence[Path]) -> tuple[Path | None, list]:
        looked: list[Path] = []
        for name in names:
            path = Path(os.path.expanduser(str(name)))
            for candidate in [path] if path.is_absolute() else [f / path for f in folders]:
                looked.append(candidate)
                if candidate.is_file():
                    return candidate, looked
        return None, looked


class LabelTableDataModule(PyiqaLayoutDataModule):
    """Base of data modules whose published layout is one label table beside one image folder.

    Subclasses list the label file names in ``spec.labels``, set :attr:`labels_what` and have
    two settings (``spec.settings``): ``labels_file`` (``"auto"``: the first of ``spec.labels``
    that exists; else a file name under ``root``) and ``image_dir`` (the image folder under
    ``root``).
    """

    #: What the label file is, for the message when none is found.
    labels_what: str = "label file"
    labels_file: str
    image_dir: str

    def published_markers(self) -> list[Path]:
        names = self.spec.labels if self.labels_file == "auto" else (self.labels_file,)
        return [self.root / n for n in names]

    def published_folders(self) -> list[Path]:
        return [self.root / self.image_dir]

    def published_requested(self) -> bool:
        return self.labels_file != "auto"

    def published_label(self) -> Path:
        """The label file in use: the first of :meth:`published_markers` that is a file.

        Raises:
            FileNotFoundError: None is; the message lists every name looked for.
        """
        labels = next((p for p in self.published_markers() if p.is_file()), None)
        if labels is None:
            raise FileNotFoundError(
                f"{self.name}: no {self.labels_what}; looked for "
                + ", ".join(str(p) for p in self.published_markers())
            )
        return labels
