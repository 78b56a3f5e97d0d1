"""Descriptions of an image's basic visual features, built from its true distortion and level.

The perception stage of perception-then-inference tuning ("Building Reasonable Inference for
Vision-Language Models in Blind Image Quality Assessment", arXiv 2512.09555) learns to describe
an image's basic visual features before the quality is inferred from that description. For the
synthetic KADID-style set the distortion of every image is known from its name
(``I01_03_02.png``: reference 1, distortion type 3, level 2), so its description is a fixed
function of the image: one sentence per feature, in this order::

    Content: a cat. Distortion: strong blur. Sharpness: blurred. Noise: clean.
    Exposure: normal. Colour: natural. Contrast: normal. Compression: none.

``Content`` names the reference photograph (:data:`CONTENTS`); ``Distortion`` is the
distortion's strength word (:func:`~.templates.strength_word` of its level) and phrase
(:data:`~.templates.PHRASES`); each feature reads :data:`NORMAL` unless the distortion acts on
it (:data:`AFFECTED`). The description never names a quality level: the inference stage has to
infer it.
"""

from __future__ import annotations

import re

from ..datasets.synthetic import DISTORTIONS, REFERENCE_NAMES
from .templates import PHRASES, strength_word

__all__ = [
    "AFFECTED",
    "CONTENTS",
    "FEATURES",
    "NORMAL",
    "PERCEPTION_QUESTION",
    "describe_features",
    "parse_synthetic_name",
    "reference_content",
    "synthetic_description",
]

#: The perception stage's question (``perception.question``).
PERCEPTION_QUESTION = "Describe the basic visual features of this image."
#: What each reference photograph of the synthetic set shows.
CONTENTS = {
    "astronaut": "a portrait of an astronaut",
    "camera": "a man with a camera",
    "chelsea": "a cat",
    "coffee": "a cup of coffee",
    "coins": "a set of coins",
    "hubble_deep_field": "galaxies in deep space",
    "immunohistochemistry": "stained tissue under a microscope",
    "moon": "the surface of the moon",
    "retina": "a retina",
    "rocket": "a rocket on its launch pad",
    "brick": "a brick wall",
    "grass": "grass",
}
#: The features every description states, in order (labels as written).
FEATURES = ("Sharpness", "Noise", "Exposure", "Colour", "Contrast", "Compression")
#: A feature's value when no distortion acts on it.
NORMAL = {
    "Sharpness": "sharp",
    "Noise": "clean",
    "Exposure": "normal",
    "Colour": "natural",
    "Contrast": "normal",
    "Compression": "none",
}
#: Distortion type -> (feature it acts on, that feature's value).
AFFECTED = {
    "gaussian_blur": ("Sharpness", "blurred"),
    "pixelation": ("Sharpness", "pixelated"),
    "gaussian_noise": ("Noise", "noisy"),
    "jpeg": ("Compression", "JPEG artifacts"),
    "contrast_reduction": ("Contrast", "low"),
    "brightness_increase": ("Exposure", "overexposed"),
    "saturation_increase": ("Colour", "oversaturated"),
}
_NAME = re.compile(r"I(\d+)(?:_(\d+)_(\d+))?\.png")


def describe_features(content: str, kind: str | None, strength: str | None) -> str:
    """The description of an image showing ``content`` with distortion ``kind`` at
    ``strength`` (``kind=None``: a pristine image)."""
    values = dict(NORMAL)
    if kind is None:
        distortion = "none"
    else:
        feature, value = AFFECTED[kind]
        values[feature] = value
        distortion = f"{strength} {PHRASES[kind][0]}"
    parts = [f"Content: {content}.", f"Distortion: {distortion}."]
    parts += [f"{feature}: {values[feature]}." for feature in FEATURES]
    return " ".join(parts)


def reference_content(ref: int) -> str:
    """What the synthetic set's reference ``ref`` (1-based) shows (:data:`CONTENTS`)."""
    if not 1 <= int(ref) <= len(REFERENCE_NAMES):
        raise ValueError(f"reference {ref} is not one of the synthetic set's 1..{len(CONTENTS)}")
    return CONTENTS[REFERENCE_NAMES[int(ref) - 1]]


def parse_synthetic_name(name: str) -> tuple[int, str | None, int | None]:
    """``(reference index, distortion type or None, level or None)`` of a synthetic image name.

    Raises:
        ValueError: The name is not ``I<ref>[_<type>_<level>].png`` with a known reference and
            type; names the image.
    """
    match = _NAME.fullmatch(str(name).rsplit("/", 1)[-1])
    if match is None:
        raise ValueError(
            f"image {name!r} is not named like a synthetic image (I<ref>_<type>_<level>.png)"
        )
    ref = int(match[1])
    if not 1 <= ref <= len(REFERENCE_NAMES):
        raise ValueError(f"image {name!r}: reference {ref} is not one of the synthetic set's")
    if match[2] is None:
        return ref, None, None
    kind = int(match[2])
    if not 1 <= kind <= len(DISTORTIONS):
        raise ValueError(f"image {name!r}: distortion type {kind} is not a synthetic type")
    return ref, DISTORTIONS[kind - 1][0], int(match[3])


def synthetic_description(name: str, levels: int) -> str:
    """The description of the synthetic image ``name`` (see the module docstring).

    Args:
        name: Image file name (``I01_03_02.png``), or a path ending in it.
        levels: Severity levels of the set (``dataset.levels``), for the strength word.

    Raises:
        ValueError: See :func:`parse_synthetic_name`; or a level above ``levels``.
    """
    ref, kind, level = parse_synthetic_name(name)
    content = reference_content(ref)
    if kind is None:
        return describe_features(content, None, None)
    if not 1 <= level <= int(levels):
        raise ValueError(f"image {name!r}: level {level} is outside 1..{levels} (dataset.levels)")
    return describe_features(content, kind, strength_word(level, int(levels)))
