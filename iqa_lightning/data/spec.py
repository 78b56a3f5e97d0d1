"""What a dataset declares about itself: one frozen :class:`DatasetSpec` per data module.

Each data module sets ``spec = DatasetSpec(...)`` as a class attribute. The base class reads
the defaults of ``name``, ``mos_range``, ``higher_better`` and ``split`` from it when the
config does not give them, and the published / pyiqa readers read the files it names, so a
dataset's facts live in one place instead of in an ``__init__`` that forwards them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DatasetSpec"]


@dataclass(frozen=True)
class DatasetSpec:
    """The facts of one dataset.

    Attributes:
        name: Short name used in logs and run folders (default of ``dataset.name``).
        title: The dataset's published name for messages, e.g. ``"KADID-10k"``.
        mos_range: (lo, hi) of the score scale (default of ``dataset.mos_range``).
        higher_better: False for DMOS-like scores, whose targets are flipped (default of
            ``dataset.higher_better``).
        split: Default split strategy (``dataset.split``): ``official`` where the dataset
            publishes one, ``reference_disjoint`` for distorted references, else ``random``.
        labels: Label files of the published layout under ``root``, in order of preference;
            any one present means the published layout is there.
        image_dirs: Image folders of the published layout under ``root``, listed when no
            layout is found.
        pyiqa_meta_names: pyiqa's meta-info file names, looked for with ``meta_file="auto"``.
        pyiqa_kind: ``"nr"`` (``name, mos, ...``) or ``"fr"`` (``ref_name, dist_name, mos,
            ...``): the column order of the meta-info file.
        settings: The dataset's own config keys (``dataset.<key>``: its label file, image
            folder, score column, ...) with their defaults; the data module takes each as a
            keyword argument and keeps it as the attribute of the same name
            (:class:`~.pyiqa.PyiqaLayoutDataModule`).
    """

    name: str
    title: str = ""
    mos_range: tuple[float, float] = (1.0, 5.0)
    higher_better: bool = True
    split: str = "random"
    labels: tuple[str, ...] = ()
    image_dirs: tuple[str, ...] = ()
    pyiqa_meta_names: tuple[str, ...] = ()
    pyiqa_kind: str = "nr"
    settings: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.pyiqa_kind not in ("nr", "fr"):
            raise ValueError(
                f"DatasetSpec.pyiqa_kind must be 'nr' or 'fr', got {self.pyiqa_kind!r}"
            )
        lo, hi = self.mos_range
        if not lo < hi:
            raise ValueError(f"DatasetSpec.mos_range must satisfy lo < hi, got {self.mos_range}")
