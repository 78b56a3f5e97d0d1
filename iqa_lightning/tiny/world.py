"""The small visual world the trained tiny models learn from, and the quality law of its IQA set.

Everything is made offline from the photographs scikit-image and matplotlib ship (:data:`PHOTOS`)
and from generated patterns (:data:`PATTERNS`), with distortions of known type and strength:

- :func:`render` crops a source (a seeded random square, or the centre), resizes it to the
  model's side and applies the distortions in a fixed order;
- :func:`perception_answers` says, in words, what the image shows and which distortions it has
  and how strong they are (the pre-training text; it never uses a quality level word,
  :data:`FORBIDDEN_WORDS`);
- :func:`quality` is the documented, fixed law that turns distortions into a mean opinion score
  for the offline IQA set (:mod:`iqa_lightning.data.datasets.learning`).

Photographs are split once (:data:`HELD_OUT_PHOTOS`): the held-out ones are never seen in
pre-training nor in the IQA set's training split, so a test on them measures generalisation.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

__all__ = [
    "DISTORTION_KINDS",
    "FORBIDDEN_WORDS",
    "HELD_OUT_PHOTOS",
    "PATTERNS",
    "PHOTOS",
    "SEEN_PHOTOS",
    "Distortion",
    "Scene",
    "check_words",
    "perception_answers",
    "quality",
    "random_scene",
    "render",
    "scene_strengths",
    "strength_classes",
    "strength_name",
]

#: Photographs (name -> what it shows). All ship with scikit-image, one with matplotlib (both
#: dependencies); none downloads.
PHOTOS = {
    "astronaut": "an astronaut in a white suit",
    "camera": "a man holding a camera",
    "chelsea": "a cat",
    "coffee": "a cup of coffee",
    "coins": "old coins",
    "hubble_deep_field": "galaxies in deep space",
    "immunohistochemistry": "stained cells under a microscope",
    "moon": "the surface of the moon",
    "retina": "the back of an eye",
    "rocket": "a rocket on its launch pad",
    "brick": "a brick wall",
    "grass": "a patch of grass",
    "gravel": "gravel on the ground",
    "clock": "a clock on a wall",
    "colorwheel": "a colour wheel",
    "cell": "a cell under a microscope",
    "page": "a printed page of text",
    "text": "painted letters on a sign",
    "motorcycle": "a motorcycle in a workshop",
    "grace_hopper": "a woman in a naval uniform",
}
#: Grey photographs (colour distortions are not drawn for them).
GREY = frozenset("camera coins moon brick grass gravel clock cell page text".split())
#: Photographs kept out of pre-training and out of the IQA set's training and validation splits.
HELD_OUT_PHOTOS = ("chelsea", "rocket", "coins", "gravel")
#: The others: what pre-training and the IQA set's training and validation splits draw from.
SEEN_PHOTOS = tuple(p for p in PHOTOS if p not in HELD_OUT_PHOTOS)
#: Generated patterns (name -> what it shows), seeded per sample.
PATTERNS = {
    "stripes": "coloured stripes",
    "checker": "a checkerboard",
    "gradient": "a smooth colour gradient",
    "circles": "coloured circles",
    "blobs": "soft coloured blobs",
    "leaves": "overlapping leaves of colour",
    "collage": "a collage of four photographs",
}

#: Quality level words of every score head: pre-training never writes them.
FORBIDDEN_WORDS = frozenset(
    "excellent good fair poor bad fine high low great terrible perfect average quality".split()
)

STRENGTH_NAMES = ("slight", "moderate", "strong", "severe")


@dataclass(frozen=True)
class Distortion:
    """One distortion kind: its words and the function that applies it at strength ``t``.

    Attributes:
        name: Identifier (``blur``).
        noun: What the image has, in words (``blur``).
        apply: ``(image, t in [0, 1], rng) -> image``.
        weight: Largest share of quality it can take away (the quality law).
        power: Curvature of its effect in the strength (the quality law).
        colour: Acts on colour only (never drawn for a grey source, where it would not show).
    """

    name: str
    noun: str
    apply: Callable[[Image.Image, float, np.random.Generator], Image.Image]
    weight: float
    power: float
    colour: bool = False


def _blur(img, t, rng):
    return img.filter(ImageFilter.GaussianBlur(radius=0.3 + 2.7 * t))


def _noise(img, t, rng):
    sigma = 3.0 + 45.0 * t
    array = np.asarray(img, dtype=np.float32) + rng.normal(0.0, sigma, (*img.size[::-1], 3))
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="RGB")


def _jpeg(img, t, rng):
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=max(2, round(45 - 43 * t)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _contrast(img, t, rng):
    return ImageEnhance.Contrast(img).enhance(1.0 - 0.85 * t)


def _overexpose(img, t, rng):
    return ImageEnhance.Brightness(img).enhance(1.0 + 1.4 * t)


def _underexpose(img, t, rng):
    return ImageEnhance.Brightness(img).enhance(1.0 - 0.8 * t)


def _saturate(img, t, rng):
    return ImageEnhance.Color(img).enhance(1.0 + 3.5 * t)


def _pixelate(img, t, rng):
    factor = 1.5 + 6.5 * t
    small = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    return img.resize(small, Image.Resampling.BOX).resize(img.size, Image.Resampling.NEAREST)


#: Distortion kinds, in the order they are applied. The quality law weights them unequally and
#: with different curvature, so no single knob (or count of distortions) orders the images.
DISTORTION_KINDS: tuple[Distortion, ...] = (
    Distortion("blur", "blur", _blur, weight=0.80, power=0.8),
    Distortion("pixelation", "pixelation", _pixelate, weight=0.60, power=1.4),
    Distortion("contrast", "faded contrast", _contrast, weight=0.50, power=1.6),
    Distortion("overexposure", "overexposure", _overexpose, weight=0.55, power=1.2),
    Distortion("underexposure", "underexposure", _underexpose, weight=0.50, power=1.5),
    Distortion(
        "saturation", "oversaturated colour", _saturate, weight=0.25, power=2.0, colour=True
    ),
    Distortion("noise", "noise", _noise, weight=0.75, power=0.7),
    Distortion("jpeg", "JPEG blocks", _jpeg, weight=0.40, power=1.6),
)
_KINDS = {d.name: d for d in DISTORTION_KINDS}


@dataclass(frozen=True)
class Scene:
    """A sample of the world: a source, a crop and the distortions applied to it.

    Attributes:
        source: A key of :data:`PHOTOS` or :data:`PATTERNS`.
        crop: ``(left, top, side)`` as fractions of the source's short side (``None``: centre).
        flip: Mirror horizontally.
        distortions: ``(kind name, strength in (0, 1])`` pairs, at most one per kind.
        seed: Seed of the pattern and of random distortions (noise).
        channels: Index of a permutation of the RGB channels (0: as is), an augmentation.
        turns: Quarter turns of the crop (0-3), an augmentation.
    """

    source: str
    crop: tuple[float, float, float] | None
    flip: bool
    distortions: tuple[tuple[str, float], ...]
    seed: int
    channels: int = 0
    turns: int = 0


def strength_name(t: float) -> str:
    """The word for a strength in (0, 1]: slight, moderate, strong or severe."""
    index = min(len(STRENGTH_NAMES) - 1, int(t * len(STRENGTH_NAMES)))
    return STRENGTH_NAMES[index]


def strength_classes(scenes: Sequence[Scene]) -> np.ndarray:
    """``[N, kinds]`` classes in :data:`DISTORTION_KINDS` order: 0 when a kind is absent, else
    1-4 for its strength word (slight .. severe)."""
    rows = []
    for scene in scenes:
        strengths = dict(scene.distortions)
        rows.append(
            [
                1 + STRENGTH_NAMES.index(strength_name(strengths[k.name]))
                if k.name in strengths
                else 0
                for k in DISTORTION_KINDS
            ]
        )
    return np.array(rows, dtype=np.int64).reshape(len(scenes), len(DISTORTION_KINDS))


def scene_strengths(scenes: Sequence[Scene]) -> np.ndarray:
    """``float32 [N, kinds]`` strengths in :data:`DISTORTION_KINDS` order, 0 when absent."""
    out = np.zeros((len(scenes), len(DISTORTION_KINDS)), dtype=np.float32)
    column = {kind.name: i for i, kind in enumerate(DISTORTION_KINDS)}
    for row, scene in enumerate(scenes):
        for name, t in scene.distortions:
            out[row, column[name]] = t
    return out


def _motorcycle() -> np.ndarray:
    from skimage import data as skdata

    return skdata.stereo_motorcycle()[0]  # the left view of the stereo pair


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        return np.asarray(image.convert("RGB"))


#: Photographs that ship with a dependency other than as ``skimage.data.<name>()``.
_OTHER_PHOTOS = {"motorcycle": _motorcycle, "grace_hopper": _grace_hopper}


@lru_cache(maxsize=64)
def _photo(name: str) -> np.ndarray:
    from skimage import data as skdata

    array = _OTHER_PHOTOS[name]() if name in _OTHER_PHOTOS else getattr(skdata, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def _pattern(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    colours = rng.uniform(0, 255, size=(4, 3)).astype(np.float32)
    if name == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.3)
        phase = (np.cos(angle) * x + np.sin(angle) * y) / period
        pick = (np.floor(phase).astype(int) % 2)[..., None]
        out = np.where(pick == 0, colours[0], colours[1])
    elif name == "checker":
        cells = int(rng.integers(3, 9))
        pick = ((np.floor(x * cells) + np.floor(y * cells)).astype(int) % 2)[..., None]
        out = np.where(pick == 0, colours[0], colours[1])
    elif name == "gradient":
        a, b = rng.uniform(-1, 1, size=2)
        ramp = ((a * x + b * y) - min(0, a) - min(0, b)) / (abs(a) + abs(b) + 1e-6)
        out = colours[0] * (1 - ramp[..., None]) + colours[1] * ramp[..., None]
    elif name == "circles":
        out = np.broadcast_to(colours[0], (side, side, 3)).copy()
        for _ in range(int(rng.integers(3, 8))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            inside = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
            out[inside] = rng.uniform(0, 255, size=3)
    elif name == "blobs":
        out = np.zeros((side, side, 3), np.float32)
        for colour in colours:
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.15, 0.5)
            weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
            out += weight * colour
        out = out / max(1.0, float(out.max()) / 255.0)
    elif name == "leaves":
        # Dead leaves: opaque discs with power-law radii, a model of natural image statistics.
        out = np.broadcast_to(colours[0], (side, side, 3)).copy()
        for _ in range(int(rng.integers(60, 140))):
            cx, cy = rng.uniform(0, 1), rng.uniform(0, 1)
            r = 0.02 * (1 - rng.uniform()) ** (-1 / 1.5)
            inside = ((x - cx) ** 2 + (y - cy) ** 2) < min(r, 0.5) ** 2
            out[inside] = rng.uniform(0, 255, size=3)
    elif name == "collage":
        names = SEEN_PHOTOS
        half = side // 2
        out = np.zeros((side, side, 3), np.float32)
        for i in range(4):
            photo = _photo(str(rng.choice(names)))
            short = min(photo.shape[:2])
            crop = int(short * rng.uniform(0.3, 0.9))
            top = int(rng.integers(0, photo.shape[0] - crop + 1))
            left = int(rng.integers(0, photo.shape[1] - crop + 1))
            tile = Image.fromarray(photo[top : top + crop, left : left + crop])
            tile = tile.resize((half, half), Image.Resampling.LANCZOS)
            out[(i // 2) * half : (i // 2 + 1) * half, (i % 2) * half : (i % 2 + 1) * half] = tile
    else:
        raise KeyError(f"no pattern {name!r}; patterns are {sorted(PATTERNS)}")
    return np.clip(out, 0, 255).astype(np.uint8)


def render(scene: Scene, side: int) -> Image.Image:
    """The RGB image of a scene, ``side`` pixels square."""
    rng = np.random.default_rng([scene.seed, 7])
    if scene.source in PATTERNS:
        image = Image.fromarray(_pattern(scene.source, side * 2, rng), mode="RGB")
    else:
        image = Image.fromarray(_photo(scene.source), mode="RGB")
    short = min(image.size)
    left, top, frac = scene.crop if scene.crop is not None else (None, None, 1.0)
    crop = max(8, int(short * frac))
    if left is None:
        left_px, top_px = (image.width - crop) // 2, (image.height - crop) // 2
    else:
        left_px = int(left * (image.width - crop))
        top_px = int(top * (image.height - crop))
    image = image.crop((left_px, top_px, left_px + crop, top_px + crop))
    image = image.resize((side, side), Image.Resampling.LANCZOS)
    if scene.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if scene.turns % 4:
        image = image.rotate(90 * (scene.turns % 4))
    if scene.channels % 6:
        order = list(itertools.permutations(range(3)))[scene.channels % 6]
        image = Image.merge("RGB", [image.split()[c] for c in order])
    strengths = dict(scene.distortions)
    for kind in DISTORTION_KINDS:
        if kind.name in strengths:
            image = kind.apply(image, float(strengths[kind.name]), rng)
    return image


def random_scene(
    rng: np.random.Generator,
    sources: Sequence[str],
    strengths: Sequence[float] | None = None,
    max_distortions: int = 2,
    augment: bool = False,
) -> Scene:
    """A random scene: a source, a random crop, 0 to ``max_distortions`` distinct kinds.

    Args:
        rng: Random generator.
        sources: Source names to draw from.
        strengths: Strengths to draw from; None: uniform in (0.05, 1].
        max_distortions: Most distortions in one image.
        augment: Also permute the colour channels and turn the crop (pre-training variety).
    """
    source = str(rng.choice(list(sources)))
    crop = (float(rng.uniform()), float(rng.uniform()), float(rng.uniform(0.35, 1.0)))
    count = int(rng.integers(0, max_distortions + 1))
    usable = [i for i, k in enumerate(DISTORTION_KINDS) if not k.colour or source not in GREY]
    kinds = rng.choice(usable, size=count, replace=False)
    distortions = []
    for k in sorted(int(i) for i in kinds):
        t = float(rng.choice(strengths)) if strengths is not None else float(rng.uniform(0.05, 1))
        distortions.append((DISTORTION_KINDS[k].name, round(t, 4)))
    extra = {"channels": int(rng.integers(6)), "turns": int(rng.integers(4))} if augment else {}
    flip, seed = bool(rng.integers(0, 2)), int(rng.integers(1 << 30))
    return Scene(source, crop, flip, tuple(distortions), seed, **extra)


def content(scene: Scene) -> str:
    """What the scene shows, in words."""
    return PHOTOS.get(scene.source) or PATTERNS[scene.source]


def distortion_phrase(scene: Scene) -> str:
    """``"strong blur and slight noise"``, or ``"no visible distortion"``."""
    parts = [f"{strength_name(t)} {_KINDS[name].noun}" for name, t in scene.distortions]
    if not parts:
        return "no visible distortion"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def perception_answers(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """A question-answer pair about a scene (the perception vocabulary of pre-training).

    One of: what it shows; which distortions and how strong; a full description; or every
    distortion kind in a fixed order with its strength (``none`` when absent), the densest
    lesson in seeing. No quality level word is ever used.
    """
    strengths = dict(scene.distortions)
    what, phrase = content(scene), distortion_phrase(scene)
    listing = ", ".join(
        f"{kind.noun} {strength_name(strengths[kind.name]) if kind.name in strengths else 'none'}"
        for kind in DISTORTION_KINDS
    )
    pairs = [
        ("What does the image show?", f"It shows {what}."),
        ("Which distortions does the image have?", f"It has {phrase}."),
        ("Describe the image.", f"It shows {what}, with {phrase}."),
        ("List the distortions of the image.", f"{listing[0].upper()}{listing[1:]}."),
    ]
    pick = int(rng.choice(len(pairs), p=[0.15, 0.3, 0.15, 0.4]))
    return [pairs[pick]]


_WORD = re.compile(r"[A-Za-z]+")


def check_words(text: str) -> None:
    """Raise ValueError if ``text`` uses a quality level word (:data:`FORBIDDEN_WORDS`)."""
    used = {w.lower() for w in _WORD.findall(text)} & FORBIDDEN_WORDS
    if used:
        raise ValueError(f"pre-training text uses quality word(s) {sorted(used)}: {text!r}")


def quality(distortions: Sequence[tuple[str, float]]) -> float:
    """Mean opinion score in [1, 5] of an image with these distortions (higher is better).

    Each distortion ``k`` at strength ``t`` keeps a share ``1 - w_k * t ** p_k`` of the quality
    (weights and powers in :data:`DISTORTION_KINDS`); shares multiply, so a second distortion
    costs less than it would alone; the product ``q`` maps to ``1 + 4 * q``. The weights differ
    by kind (blur and noise cost most, oversaturation least) and the powers bend each curve, so
    a model must know both the kinds and the strengths to rank images.
    """
    keep = 1.0
    for name, t in distortions:
        kind = _KINDS[name]
        keep *= 1.0 - kind.weight * float(t) ** kind.power
    return 1.0 + 4.0 * keep
