"""Writers of tiny datasets in their real on-disk layouts (real file names and CSV headers).

Used by the data tests and by any test that needs a dataset on disk. Each writer returns the
dataset root; images are a few dozen pixels wide so a whole set writes in milliseconds.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "KONIQ_SETS_HEADER",
    "KONIQ_SCORES_HEADER",
    "AGIQA_HEADER",
    "KADID_HEADER",
    "kadid_score",
    "koniq_counts_of",
    "koniq_sd_of",
    "koniq_set_of",
    "write_agiqa",
    "write_image",
    "write_kadid",
    "write_koniq",
]

KADID_HEADER = ["dist_img", "ref_img", "dmos", "var"]
KONIQ_SETS_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]
KONIQ_SCORES_HEADER = [
    "image_name",
    *("c1", "c2", "c3", "c4", "c5", "c_total"),
    "MOS",
    "SD",
    "MOS_zscore",
]
AGIQA_HEADER = [
    "name",
    "prompt",
    "adj1",
    "adj2",
    "style",
    "mos_quality",
    "std_quality",
    "mos_align",
    "std_align",
]
_AGIQA_MODELS = ("AttnGAN", "DALLE2", "glide", "midjourney", "sd1.5", "xl2.2")


def write_image(path: str | os.PathLike, seed: int = 0, size: tuple[int, int] = (24, 16)) -> Path:
    """Write a small distinct RGB image; the format follows the suffix (.png, .jpg, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base = rng.uniform(0, 255, size=(1, 1, 3)).astype(np.float32)
    array = (0.5 * ramp + 0.5 * base + rng.normal(0, 8, size=(height, width, 3))).clip(0, 255)
    image = Image.fromarray(array.astype(np.uint8), mode="RGB")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=90)
    else:
        image.save(path)
    return path


def write_kadid(
    root: str | os.PathLike,
    n_refs: int = 10,
    n_types: int = 2,
    n_levels: int = 3,
    size: tuple[int, int] = (24, 16),
) -> Path:
    """Write a KADID-10k layout: ``dmos.csv`` and ``images/`` with references and distortions.

    Scores fall linearly with the level from 4.6 to 1.4 (1-5 scale, higher is better), shifted
    by up to 0.2 per reference so scores differ between references.

    Returns:
        The dataset root.
    """
    root = Path(root)
    images = root / "images"
    rows = []
    for r in range(1, n_refs + 1):
        ref_name = f"I{r:02d}.png"
        write_image(images / ref_name, seed=r, size=size)
        for d in range(1, n_types + 1):
            for level in range(1, n_levels + 1):
                name = f"I{r:02d}_{d:02d}_{level:02d}.png"
                write_image(images / name, seed=1000 * r + 10 * d + level, size=size)
                rows.append([name, ref_name, f"{kadid_score(r, level, n_levels):.3f}", "0.25"])
    _write_csv(root / "dmos.csv", KADID_HEADER, rows)
    return root


def kadid_score(ref: int, level: int, n_levels: int) -> float:
    """The score :func:`write_kadid` gives reference ``ref`` at ``level``."""
    fraction = (level - 1) / max(1, n_levels - 1)
    return 4.6 - 3.2 * fraction - 0.02 * (ref % 10)


def koniq_set_of(index: int) -> str:
    """Official set of the ``index``-th image written by :func:`write_koniq` (70/10/20)."""
    slot = index % 10
    return "training" if slot < 7 else ("validation" if slot == 7 else "test")


def write_koniq(
    root: str | os.PathLike,
    n_images: int = 30,
    with_sets: bool = True,
    with_scores: bool | None = None,
    image_dir: str = "1024x768",
    size: tuple[int, int] = (32, 24),
) -> Path:
    """Write a KonIQ-10k layout with numeric JPEG names like the real set.

    ``koniq10k_distributions_sets.csv`` holds the 1-100 ``MOS`` and the official ``set``;
    ``koniq10k_scores_and_distributions.csv`` holds the 1-5 ``MOS`` and the 1-100
    ``MOS_zscore``. The i-th image has 1-100 score ``10 + 80 * i / (n_images - 1)``. As in the
    real files, the rating histogram ``c1 .. c5`` holds fractions in the sets file and counts
    (summing to ``c_total``) in the scores file, and ``SD`` is on the 1-5 rating scale in both
    (:func:`koniq_counts_of` and :func:`koniq_sd_of` give them).

    Args:
        root: Dataset root.
        n_images: Number of images.
        with_sets: Write the sets file.
        with_scores: Write the scores file; defaults to ``not with_sets``.
        image_dir: Image folder name (``1024x768`` or ``512x384``).
        size: Image size.

    Returns:
        The dataset root.
    """
    root = Path(root)
    with_scores = (not with_sets) if with_scores is None else with_scores
    sets_rows, score_rows = [], []
    for i in range(n_images):
        name = f"{10004473376 + 7919 * i}.jpg"
        write_image(root / image_dir / name, seed=i, size=size)
        score100 = 10.0 + 80.0 * i / max(1, n_images - 1)
        score5 = 1.0 + 4.0 * (score100 - 1.0) / 99.0
        counts = koniq_counts_of(i, n_images)
        total = sum(counts)
        fractions = [f"{c / total:.12g}" for c in counts]
        sd = f"{koniq_sd_of(i):.6f}"
        sets_rows.append([name, *fractions, str(total), f"{score100:.4f}", sd, koniq_set_of(i)])
        score_rows.append(
            [name, *map(str, counts), str(total), f"{score5:.4f}", sd, f"{score100:.4f}"]
        )
    if with_sets:
        _write_csv(root / "koniq10k_distributions_sets.csv", KONIQ_SETS_HEADER, sets_rows)
    if with_scores:
        _write_csv(root / "koniq10k_scores_and_distributions.csv", KONIQ_SCORES_HEADER, score_rows)
    return root


def write_agiqa(
    root: str | os.PathLike,
    n_images: int = 30,
    image_dir: str = "images",
    size: tuple[int, int] = (24, 24),
) -> Path:
    """Write an AGIQA-3K layout: ``data.csv`` (real header, quoted prompts) and the images.

    The i-th image has ``mos_quality = 0.2 + 4.6 * i / (n_images - 1)`` (0-5 scale).

    Returns:
        The dataset root.
    """
    root = Path(root)
    rows = []
    for i in range(n_images):
        model = _AGIQA_MODELS[i % len(_AGIQA_MODELS)]
        name = f"{model}_normal_{i:03d}.jpg"
        write_image(root / image_dir / name, seed=i, size=size)
        quality = 0.2 + 4.6 * i / max(1, n_images - 1)
        style = "anime style" if i % 3 == 0 else ""
        prompt = f"a cat doing karaoke number {i}" + (f", {style}" if style else "")
        align = 4.5 - 3.0 * i / max(1, n_images - 1)
        rows.append([name, prompt, "", "", style, f"{quality:.6f}", "0.5", f"{align:.6f}", "0.6"])
    _write_csv(root / "data.csv", AGIQA_HEADER, rows)
    return root


def koniq_counts_of(index: int, n_images: int) -> list[int]:
    """The rating counts ``c1 .. c5`` :func:`write_koniq` gives its ``index``-th image: about
    100-120 ratings around its 1-5 score."""
    score5 = 1.0 + 4.0 * (10.0 + 80.0 * index / max(1, n_images - 1) - 1.0) / 99.0
    weights = np.exp(-0.5 * ((np.arange(1, 6) - score5) / 0.7) ** 2)
    return [int(c) for c in np.round(weights / weights.sum() * (100 + index % 20))]


def koniq_sd_of(index: int) -> float:
    """The ``SD`` (1-5 rating scale) :func:`write_koniq` gives its ``index``-th image."""
    return 0.4 + 0.05 * (index % 7)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
