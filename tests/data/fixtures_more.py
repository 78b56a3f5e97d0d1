"""Writers of tiny LIVE, CSIQ, TID2013, LIVE Challenge, SPAQ and PIPAL sets, and pyiqa layouts.

Each dataset writer produces the authors' published layout (real file names, spreadsheet
sheets and headers, .mat variable names written with ``scipy.io.savemat``) and/or pyiqa's
layout: ``meta_info_<Name>Dataset.csv`` in ``root/../meta_info`` with a two-part seeded split
column ``ratio802_seed123_split_01`` (``official_split`` too where the dataset has one) and a
split pickle under pyiqa's file name. Images are a few dozen pixels wide.
"""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
from scipy.io import savemat

from .fixtures import _write_csv, write_agiqa, write_image, write_kadid, write_koniq

__all__ = [
    "CSIQ_REFS",
    "KONIQ_PYIQA_CODES",
    "KONIQ_PYIQA_VERSIONS",
    "SPLIT_COLUMN",
    "pyiqa_phase",
    "write_clive",
    "write_csiq",
    "write_live",
    "write_pipal",
    "write_pyiqa_agiqa",
    "write_pyiqa_kadid",
    "write_pyiqa_koniq",
    "write_spaq",
    "write_split_pickle",
    "write_tid2013",
]

SPLIT_COLUMN = "ratio802_seed123_split_01"
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_REFS = ("bikes", "building2", "buildings", "caps", "carnivaldolls", "cemetry",
             "churchandcapitol", "coinsinfountain", "dancers", "flowersonih35")  # fmt: skip
CSIQ_REFS = ("1600", "aerial_city", "boston", "bridge", "butter_flower", "cactus",
             "child_swimming", "couple", "elk", "family")  # fmt: skip
CSIQ_TYPES = (
    ("noise", "awgn", "AWGN"),
    ("jpeg 2000", "jpeg2000", "jpeg2000"),
    ("blur", "blur", "BLUR"),
)
SPAQ_HEADER = [
    "Image name",
    "MOS",
    "Brightness",
    "Colorfulness",
    "Contrast",
    "Noisiness",
    "Sharpness",
]


def pyiqa_phase(position: int, shift: int = 0) -> str:
    """The phase of the ``position``-th key in the fixtures' pyiqa splits (8:2 train/val)."""
    return "val" if (position + shift) % 5 == 0 else "train"


def write_split_pickle(path: Path, keys: list[str], n_splits: int = 2, official=None) -> Path:
    """pyiqa split pickle ``{i: {"train": [...], "val": [...], "test": [...]}}`` of row indices.

    ``keys`` gives each row's group (reference or image); split ``i`` uses :func:`pyiqa_phase`
    with shift ``i - 1``. With ``official`` (one phase per row) there is one split, as in
    ``koniq10k_official.pkl``.
    """
    order = sorted(set(keys))
    splits = {}
    for i in range(1, (1 if official else n_splits) + 1):
        parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for row, key in enumerate(keys):
            phase = official[row] if official else pyiqa_phase(order.index(key), i - 1)
            parts[phase].append(row)
        splits[i] = parts
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(splits))
    return path


def write_live(root: str | os.PathLike, n_refs: int = 10, layout: str = "published") -> Path:
    """LIVE Release 2: ``n_refs`` distorted images per folder (one per reference), the other
    entries of the 982 reference copies (``orgs=1``). DMOS of folder ``f``, reference ``r``:
    ``20 + 10 * f + 2 * r``."""
    root = Path(root)
    dmos, orgs, refnames, meta = [], [], [], []
    for f, (folder, count) in enumerate(LIVE_FOLDERS):
        for k in range(1, count + 1):
            r = k - 1
            distorted = r < n_refs
            ref = f"{LIVE_REFS[r % len(LIVE_REFS)]}.bmp"
            dmos.append(20.0 + 10 * f + 2 * r if distorted else 0.0)
            orgs.append(0 if distorted else 1)
            refnames.append(ref)
            if distorted:
                write_image(root / folder / f"img{k}.bmp", seed=100 * f + k)
                meta.append([f"refimgs/{ref}", f"{folder}/img{k}.bmp", f"{dmos[-1]:.4f}"])
    for ref in LIVE_REFS[:n_refs]:
        write_image(root / "refimgs" / f"{ref}.bmp", seed=7)
    if layout in ("published", "both"):
        cells = np.empty((1, len(refnames)), dtype=object)
        cells[0, :] = refnames
        savemat(root / "refnames_all.mat", {"refnames_all": cells})
        savemat(root / "dmos.mat", {"dmos": np.array([dmos]), "orgs": np.array([orgs], float)})
    if layout in ("pyiqa", "both"):
        header = ["ref_name", "dist_name", "mos"]
        _write_pyiqa(root, "meta_info_LIVEIQADataset.csv", header, meta, split_file="live_123.pkl")
    return root


def write_csiq(
    root: str | os.PathLike,
    n_refs: int = 10,
    n_levels: int = 2,
    layout: str = "published",
    labels: str = "xlsx",
    nested: bool = True,
) -> Path:
    """CSIQ: ``csiq.DMOS.xlsx`` (sheet ``all_by_image``, header on row 4 in D-I; ``labels="csv"``
    writes the CSV export instead) and ``dst_imgs/<type>/`` (flat with ``nested=False``).
    DMOS: ``0.1 + 0.3 * level + 0.05 * type + 0.01 * ref`` (higher is worse)."""
    root = Path(root)
    table, meta = [], []
    for r, image in enumerate(CSIQ_REFS[:n_refs]):
        write_image(root / "src_imgs" / f"{image}.png", seed=r)
        for t, (kind, folder, token) in enumerate(CSIQ_TYPES):
            for level in range(1, n_levels + 1):
                name = f"{image}.{token}.{level}.png"
                write_image(root / "dst_imgs" / (folder if nested else "") / name, seed=r * 50 + t)
                dmos = round(0.1 + 0.3 * (level - 1) + 0.05 * t + 0.01 * r, 6)
                cell = int(image) if image.isdigit() else image
                table.append([cell, t + 1, kind, level, 0.05, dmos])
                meta.append([f"{image}.png", name, f"{dmos:.6f}"])
    header = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
    if layout in ("published", "both") and labels == "xlsx":
        import openpyxl

        workbook = openpyxl.Workbook()
        workbook.active.title = "notes"
        sheet = workbook.create_sheet("all_by_image")
        sheet["A1"] = "CSIQ image database: DMOS by image"
        for c, value in enumerate(header, start=4):
            sheet.cell(row=4, column=c, value=value)
        for i, row in enumerate(table, start=5):
            for c, value in enumerate(row, start=4):
                sheet.cell(row=i, column=c, value=value)
        workbook.create_sheet("all_by_distortion")
        workbook.save(root / "csiq.DMOS.xlsx")
    elif layout in ("published", "both"):
        rows = [["", "", "", *map(str, row)] for row in table]
        _write_csv(root / "csiq.DMOS.csv", ["", "", "", *header], rows)
    if layout in ("pyiqa", "both"):
        header = ["ref_name", "dist_name", "dmos"]
        _write_pyiqa(root, "meta_info_CSIQDataset.csv", header, meta, split_file="csiq_123.pkl")
    return root


def write_tid2013(
    root: str | os.PathLike,
    n_refs: int = 10,
    n_types: int = 2,
    n_levels: int = 2,
    layout="published",
) -> Path:
    """TID2013: ``mos_with_names.txt`` and ``distorted_images/``. The first image of each
    reference is listed as ``I01_01_1.bmp`` but stored as ``i01_01_1.bmp``, as in the real set.
    MOS: ``6.5 - 1.5 * (level - 1) - 0.3 * type + 0.05 * ref`` (0-9, higher is better)."""
    root = Path(root)
    lines, std, meta = [], [], []
    for r in range(1, n_refs + 1):
        write_image(root / "reference_images" / f"I{r:02d}.BMP", seed=r)
        for d in range(1, n_types + 1):
            for level in range(1, n_levels + 1):
                on_disk = f"i{r:02d}_{d:02d}_{level}.bmp"
                listed = on_disk.upper().replace(".BMP", ".bmp") if d == level == 1 else on_disk
                write_image(root / "distorted_images" / on_disk, seed=100 * r + 10 * d + level)
                mos = 6.5 - 1.5 * (level - 1) - 0.3 * d + 0.05 * r
                lines.append(f"{mos:.5f} {listed}")
                std.append("0.12")
                meta.append([f"I{r:02d}.BMP", on_disk, f"{mos:.5f}", "0.12"])
    if layout in ("published", "both"):
        (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
        (root / "mos_std.txt").write_text("\n".join(std) + "\n")
    if layout in ("pyiqa", "both"):
        header = ["ref_name", "dist_name", "mos", "std"]
        split_file = "tid2013_seed123.pkl"
        _write_pyiqa(root, "meta_info_TID2013Dataset.csv", header, meta, split_file=split_file)
    return root


def write_clive(root: str | os.PathLike, n_images: int = 30, layout: str = "published") -> Path:
    """LIVE Challenge: ``Data/*.mat`` listing ``t1.bmp`` ... ``t7.bmp`` (in
    ``Images/trainingImages/``) and ``n_images`` images ``100.bmp`` ... with MOS
    ``5 + 90 * i / (n_images - 1)``; the training images have MOS 50."""
    root = Path(root)
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{100 + i}.bmp" for i in range(n_images)]
    mos = [50.0] * 7 + [5.0 + 90.0 * i / max(1, n_images - 1) for i in range(n_images)]
    for i, name in enumerate(names):
        folder = root / "Images" / ("trainingImages" if name.startswith("t") else "")
        write_image(folder / name, seed=i)
    if layout in ("published", "both"):
        cells = np.empty((len(names), 1), dtype=object)
        cells[:, 0] = names
        (root / "Data").mkdir(parents=True, exist_ok=True)
        savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
        savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
        savemat(
            root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.ones((1, len(names)))}
        )
    if layout in ("pyiqa", "both"):
        meta = [[n, f"{m:.6f}", "18.0"] for n, m in zip(names, mos, strict=True)]
        _write_pyiqa(
            root, "meta_info_LIVEChallengeDataset.csv", ["img_name", "mos", "std"], meta, names
        )
        write_split_pickle(root.parent / "meta_info" / "livechallenge_seed123.pkl", names[7:])
    return root


def write_spaq(
    root: str | os.PathLike, n_images: int = 30, layout: str = "published", labels: str = "xlsx"
) -> Path:
    """SPAQ: ``Annotations/MOS and Image attribute scores.xlsx`` (or its ``.csv`` export) and
    ``TestImage/00001.jpg`` ...; MOS ``10 + 80 * i / (n_images - 1)``, Sharpness ``90 - i``."""
    root = Path(root)
    rows = []
    for i in range(n_images):
        name = f"{i + 1:05d}.jpg"
        write_image(root / "TestImage" / name, seed=i)
        mos = round(10.0 + 80.0 * i / max(1, n_images - 1), 2)
        rows.append([name, mos, 50.0, 55.5, 60.0, 45.25, 90.0 - i])
    if layout in ("published", "both") and labels == "xlsx":
        import openpyxl

        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.append(SPAQ_HEADER)
        for row in rows:
            sheet.append(row)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        workbook.save(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    elif layout in ("published", "both"):
        path = root / "Annotations" / "MOS and Image attribute scores.csv"
        _write_csv(path, SPAQ_HEADER, [[str(v) for v in row] for row in rows])
    if layout in ("pyiqa", "both"):
        # pyiqa merges the scene and EXIF sheets in; EXIF repeats the column name Brightness.
        header = [*SPAQ_HEADER, "Animal", "ISO", "Brightness", "Flash"]
        meta = [[str(v) for v in row] + ["0.0", "100", "1.5", "0"] for row in rows]
        _write_pyiqa(root, "meta_info_SPAQDataset.csv", header, meta, split_file="spaq_seed123.pkl")
    return root


def write_pipal(
    root: str | os.PathLike,
    n_refs: int = 10,
    per_ref: int = 4,
    layout: str = "published",
    naming: str = "ntire",
) -> Path:
    """PIPAL: ``Train_Label/A0001.txt`` ... and ``Distortion_1`` ... ``Distortion_4`` (the
    authors' README names, ``MOS_Scores_train/`` and ``Distortion/Distortion_k``, with
    ``naming="readme"``; pyiqa's ``Dist_Imgs/`` for the pyiqa layout). Score of reference
    ``r``, image ``k``: ``1100 + 150 * k + 10 * r``. pyiqa's ``official_split`` puts references
    1-7 in train, 8 in val, 9-10 in test."""
    root = Path(root)
    labels = root / ("MOS_Scores_train" if naming == "readme" else "Train_Label")
    parts = "Distortion/Distortion_{}" if naming == "readme" else "Distortion_{}"
    meta, official = [], []
    for r in range(1, n_refs + 1):
        ref = f"A{r:04d}"
        write_image(root / "Train_Ref" / f"{ref}.bmp", seed=r)
        lines = []
        for k in range(per_ref):
            name = f"{ref}_{k:02d}_{r % 3:02d}.bmp"
            score = 1100.0 + 150.0 * k + 10.0 * r
            lines.append(f"{name},{score:.4f}")
            meta.append([f"{ref}.bmp", name, f"{score:.4f}"])
            official.append("train" if r <= 7 else ("val" if r == 8 else "test"))
            if layout in ("published", "both"):
                write_image(root / parts.format(1 + (r + k) % 4) / name, seed=10 * r + k)
            if layout in ("pyiqa", "both") and not (root / parts.format(1 + (r + k) % 4)).is_dir():
                write_image(root / "Dist_Imgs" / name, seed=10 * r + k)
        if layout in ("published", "both"):
            labels.mkdir(parents=True, exist_ok=True)
            (labels / f"{ref}.txt").write_text("\n".join(lines) + "\n")
    if layout in ("pyiqa", "both"):
        header = ["hq_name", "dist_name", "elo_score"]
        _write_pyiqa(root, "meta_info_PIPALDataset.csv", header, meta, official=official)
    return root


#: The split values of the meta-info file versions :func:`write_pyiqa_koniq` can write.
KONIQ_PYIQA_VERSIONS = ("codes", "names", "official_split")
#: pyiqa's KonIQ-10k split codes (``scripts/process_koniq10k.py``): the authors' set names.
KONIQ_PYIQA_CODES = {"training": "0", "validation": "1", "test": "2"}


def write_pyiqa_koniq(root: str | os.PathLike, n_images: int = 30, version: str = "codes") -> Path:
    """KonIQ-10k in pyiqa's layout: ``512x384/``, ``meta_info_KonIQ10kDataset.csv`` and
    ``koniq10k_official.pkl``. Same images and 1-100 scores as
    :func:`~tests.data.fixtures.write_koniq`.

    The meta-info file is written as pyiqa's ``scripts/process_koniq10k.py`` writes it: header
    ``img_name,mos,std,split,c1,c2,c3,c4,c5,c_total`` (``MOS``, ``SD`` and ``set`` of the
    authors' sets file, then the rating fractions and the count), CRLF line ends.

    Args:
        root: Dataset root.
        n_images: Number of images.
        version: The ``split`` values: ``"codes"`` (pyiqa's current file: ``0`` / ``1`` / ``2``
            for training / validation / test), ``"names"`` (an earlier pyiqa file: the set names
            training / validation / test) or ``"official_split"`` (an ``official_split`` column
            of train / val / test after ``std``, as pyiqa-style files of other datasets have).
    """
    if version not in KONIQ_PYIQA_VERSIONS:
        raise ValueError(f"version must be one of {KONIQ_PYIQA_VERSIONS}, got {version!r}")
    root = write_koniq(root, n_images, with_sets=True, image_dir="512x384")
    published = _take_rows(root / "koniq10k_distributions_sets.csv")
    column = "official_split" if version == "official_split" else "split"
    header = ["img_name", "mos", "std", column, "c1", "c2", "c3", "c4", "c5", "c_total"]
    phase = {"training": "train", "validation": "val", "test": "test"}
    value = {"codes": KONIQ_PYIQA_CODES, "names": {s: s for s in phase}, "official_split": phase}
    meta = [
        [row["image_name"], row["MOS"], row["SD"], value[version][row["set"]]]
        + [row[c] for c in ("c1", "c2", "c3", "c4", "c5", "c_total")]
        for row in published
    ]
    keys = [row[0] for row in meta]
    _write_pyiqa(root, "meta_info_KonIQ10kDataset.csv", header, meta, column=None)
    official = [phase[row["set"]] for row in published]
    write_split_pickle(root.parent / "meta_info" / "koniq10k_official.pkl", keys, official=official)
    return root


def write_pyiqa_kadid(root: str | os.PathLike, n_refs: int = 10) -> Path:
    """KADID-10k in pyiqa's layout: ``images/`` and ``meta_info_KADID10kDataset.csv``."""
    root = write_kadid(root, n_refs=n_refs, n_types=2, n_levels=3)
    meta = [
        [r["ref_img"], r["dist_img"], r["dmos"], r["var"]] for r in _take_rows(root / "dmos.csv")
    ]
    header = ["ref_name", "dist_name", "dmos", "std"]
    _write_pyiqa(root, "meta_info_KADID10kDataset.csv", header, meta)
    return root


def write_pyiqa_agiqa(root: str | os.PathLike, n_images: int = 30) -> Path:
    """AGIQA-3K in the pyiqa fork's layout: images and ``meta_info_AGIQA-3K.csv``."""
    root = write_agiqa(root, n_images)
    meta = [[r["name"], r["mos_quality"], r["std_quality"]] for r in _take_rows(root / "data.csv")]
    _write_pyiqa(root, "meta_info_AGIQA-3K.csv", ["name", "mos", "std"], meta)
    return root


def _take_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a published CSV file, which is then deleted (replaced by pyiqa's layout)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    path.unlink()
    return rows


def _write_pyiqa(
    root, file_name, header, rows, keys=None, official=None, column=SPLIT_COLUMN, split_file=None
):
    """Write ``root/../meta_info/<file_name>`` with the split column(s) appended, and with
    ``split_file`` a split pickle there. ``keys`` (each row's split group) default to the
    rows' first cells."""
    keys = [row[0] for row in rows] if keys is None else keys
    order = sorted(set(keys))
    extra = [column] if column else []
    extra += ["official_split"] if official else []
    body = []
    for i, (row, key) in enumerate(zip(rows, keys, strict=True)):
        cells = [*row, pyiqa_phase(order.index(key))] if column else list(row)
        body.append(cells + ([official[i]] if official else []))
    _write_csv(Path(root).parent / "meta_info" / file_name, [*header, *extra], body)
    if split_file is not None:
        write_split_pickle(Path(root).parent / "meta_info" / split_file, keys)
