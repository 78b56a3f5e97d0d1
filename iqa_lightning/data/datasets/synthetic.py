"""A small KADID-10k-style dataset generated from the photographs scikit-image ships.

It needs no download, so training, tests and tutorials can run anywhere. Each reference is
center-cropped to a square, resized, and distorted by seven types at ``levels`` severities.
The quality score is derived from SSIM to the reference (mapped monotonically to [1, 5], higher
is better, plus a little seeded noise), so a model can learn it and scores fall with severity.

Names follow KADID-10k: ``I01.png`` is a reference, ``I01_03_02.png`` is reference 1,
distortion type 3, level 2; ``dmos.csv`` has the columns ``dist_img,ref_img,dmos,var``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from skimage import data as skdata
from skimage.metrics import structural_similarity

from ..generated import GeneratedSet
from .kadid import KADIDDataModule

__all__ = [
    "DISTORTIONS",
    "GENERATION_SETTINGS",
    "REFERENCE_NAMES",
    "SyntheticDataModule",
    "generate_synthetic_kadid",
    "pop_generation",
    "synthetic_dirname",
]

GENERATOR_VERSION = 1
MARKER = "synthetic_kadid.json"
REFERENCE_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "brick",
    "grass",
)
_SCORE_NOISE = 0.05
_SET = GeneratedSet("synthetic dataset", MARKER, "dmos.csv")


def _blur(img: Image.Image, t: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=0.5 + 4.5 * t))


def _noise(img: Image.Image, t: float, rng: np.random.Generator) -> Image.Image:
    sigma = 4.0 + 46.0 * t
    array = np.asarray(img, dtype=np.float32) + rng.normal(0.0, sigma, size=(*img.size[::-1], 3))
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="RGB")


def _jpeg(img: Image.Image, t: float, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=max(1, round(60 - 57 * t)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _contrast(img: Image.Image, t: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(1.0 - 0.85 * t)


def _brightness(img: Image.Image, t: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(1.0 + 1.2 * t)


def _saturation(img: Image.Image, t: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Color(img).enhance(1.0 + 3.0 * t)


def _pixelate(img: Image.Image, t: float, rng: np.random.Generator) -> Image.Image:
    factor = 1.5 + 10.5 * t
    small = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    return img.resize(small, Image.Resampling.BOX).resize(img.size, Image.Resampling.NEAREST)


DISTORTIONS: tuple[
    tuple[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]], ...
]
DISTORTIONS = (
    ("gaussian_blur", _blur),
    ("gaussian_noise", _noise),
    ("jpeg", _jpeg),
    ("contrast_reduction", _contrast),
    ("brightness_increase", _brightness),
    ("saturation_increase", _saturation),
    ("pixelation", _pixelate),
)


def synthetic_dirname(
    n_refs: int = 12, image_size: int = 192, levels: int = 5, seed: int = 0
) -> str:
    """Folder name ``synthetic_kadid_<hash>`` identifying the generation parameters."""
    params = _params(n_refs, image_size, levels, seed)
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return f"synthetic_kadid_{digest}"


def generate_synthetic_kadid(
    out_dir: str | os.PathLike,
    image_size: int = 192,
    levels: int = 5,
    seed: int = 0,
    n_refs: int = 12,
) -> Path:
    """Write a KADID-10k-layout dataset to ``out_dir`` (``dmos.csv`` and ``images/``).

    Writing goes to a temporary sibling folder that is renamed into place, so a reader never
    sees a half-written set and two processes generating at once are safe. If ``out_dir``
    already holds a complete set with the same parameters it is returned untouched.

    Args:
        out_dir: Dataset root to create.
        image_size: Side of the square images.
        levels: Severity levels per distortion type.
        seed: Seed of the noise distortion and of the score noise.
        n_refs: Number of reference photographs, at most 12.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: Bad parameters.
        FileExistsError: ``out_dir`` exists with other content or other parameters.
    """
    out_dir = Path(out_dir)
    params = _params(n_refs, image_size, levels, seed)
    return _SET.write(out_dir, params, lambda tmp: _write_dataset(tmp, params))


class SyntheticDataModule(KADIDDataModule):
    """KADID-style data module over a generated set cached under ``cache_dir``.

    The set lives in ``cache_dir/synthetic_kadid_<hash of generation parameters>`` and is
    generated in :meth:`prepare_data`, or in :meth:`setup` when it is still absent. With
    ``cache=True`` the preprocessed images go to ``cache_dir/preprocessed``.

    Args:
        cache_dir: Folder for generated data (config key ``paths.cache_dir``).
        n_refs: Number of reference photographs (1-12).
        generated_size: Side of the generated images (the model input size is ``image_size``).
        levels: Severity levels per distortion type.
        generator_seed: Seed of the generation (independent of the split ``seed``).
        **kwargs: Other :class:`~iqa_lightning.data.base.IQADataModule` arguments.
    """

    spec = replace(KADIDDataModule.spec, name="synthetic")

    def __init__(self, cache_dir: str | os.PathLike = ".cache", **kwargs):
        self.generation = pop_generation(kwargs)
        _params(**self.generation)
        cache_root = Path(os.path.expanduser(str(cache_dir)))
        root = cache_root / synthetic_dirname(**self.generation)
        super().__init__(root=root, cache_dir=cache_root / "preprocessed", **kwargs)

    def prepare_data(self) -> None:
        """Generate the set if it is not cached yet."""
        generate_synthetic_kadid(self.root, **self.generation)

    def check_root(self) -> None:
        """Generate the set when absent, then check it as usual."""
        self.prepare_data()
        super().check_root()


#: A generated set's settings as data modules take them (config keys), with their defaults.
GENERATION_SETTINGS = {"n_refs": 12, "generated_size": 192, "levels": 5, "generator_seed": 0}


def pop_generation(kwargs: dict) -> dict[str, int]:
    """Take the generation settings (:data:`GENERATION_SETTINGS`, their defaults where absent)
    out of a data module's keyword arguments; returns them as the keyword arguments of
    :func:`generate_synthetic_kadid` and :func:`synthetic_dirname` (not checked: see
    :func:`generate_synthetic_kadid`)."""
    given = {key: kwargs.pop(key, default) for key, default in GENERATION_SETTINGS.items()}
    return {
        "n_refs": int(given["n_refs"]),
        "image_size": int(given["generated_size"]),
        "levels": int(given["levels"]),
        "seed": int(given["generator_seed"]),
    }


def _params(n_refs: int, image_size: int, levels: int, seed: int) -> dict:
    if not 1 <= int(n_refs) <= len(REFERENCE_NAMES):
        raise ValueError(f"n_refs must be in [1, {len(REFERENCE_NAMES)}], got {n_refs}")
    if not 8 <= int(image_size) <= 1024:
        raise ValueError(f"generated image size must be in [8, 1024], got {image_size}")
    if not 1 <= int(levels) <= 99:
        raise ValueError(f"levels must be in [1, 99], got {levels}")
    return {
        "version": GENERATOR_VERSION,
        "n_refs": int(n_refs),
        "image_size": int(image_size),
        "levels": int(levels),
        "seed": int(seed),
        "distortions": [name for name, _ in DISTORTIONS],
    }


def _reference(name: str, size: int) -> Image.Image:
    array = getattr(skdata, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    array = array[..., :3].astype(np.uint8)
    height, width = array.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(array[top : top + side, left : left + side], mode="RGB")
    return square.resize((size, size), Image.Resampling.LANCZOS)


def _write_dataset(root: Path, params: dict) -> None:
    images = root / "images"
    images.mkdir(parents=True)
    levels = params["levels"]
    rows: list[tuple[str, str, float]] = []
    for r, ref_name in enumerate(REFERENCE_NAMES[: params["n_refs"]], start=1):
        reference = _reference(ref_name, params["image_size"])
        ref_file = f"I{r:02d}.png"
        reference.save(images / ref_file, compress_level=1)
        ref_array = np.asarray(reference)
        for d, (_, distort) in enumerate(DISTORTIONS, start=1):
            for level in range(1, levels + 1):
                rng = np.random.default_rng([params["seed"], r, d, level])
                distorted = distort(reference, level / levels, rng)
                dist_file = f"I{r:02d}_{d:02d}_{level:02d}.png"
                distorted.save(images / dist_file, compress_level=1)
                ssim = structural_similarity(
                    ref_array, np.asarray(distorted), channel_axis=2, data_range=255
                )
                rows.append((dist_file, ref_file, float(ssim)))
    _write_scores(root / "dmos.csv", rows, params["seed"])


def _write_scores(path: Path, rows: Sequence[tuple[str, str, float]], seed: int) -> None:
    ssim = np.array([row[2] for row in rows], dtype=np.float64)
    low, high = float(ssim.min()), float(ssim.max())
    unit = (ssim - low) / (high - low) if high > low else np.ones_like(ssim)
    noise = np.random.default_rng([seed, 10007]).normal(0.0, _SCORE_NOISE, size=len(rows))
    scores = np.clip(1.0 + 4.0 * unit + noise, 1.0, 5.0)
    spread = 0.2 + 1.2 * unit * (1.0 - unit)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dist_img", "ref_img", "dmos", "var"])
        for (dist_file, ref_file, _), score, var in zip(rows, scores, spread, strict=True):
            writer.writerow([dist_file, ref_file, f"{score:.4f}", f"{var:.4f}"])
