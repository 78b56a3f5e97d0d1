"""How pixels are prepared for an image encoder: its normalisation statistics and the ways an
image becomes a square (config key ``dataset.resize``).

Both the backbones (their defaults) and the data loaders (the pixels) need these, so they live
here, below both: this module imports nothing of the package and nothing heavy. The resizing
itself is :func:`iqa_lightning.data.images.resize_to_array`.
"""

from __future__ import annotations

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAD_COLOR",
    "PAD_COLORS",
    "RESIZES",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "check_resize",
]

#: OpenAI CLIP's per-channel mean and standard deviation (``CLIPImageProcessor``'s defaults).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: SigLIP's (Bunny's vision tower).
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
#: ImageNet's (``model.normalization=imagenet``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How an image becomes a square (config key ``dataset.resize``):
# - squash: resize both sides to the target, changing the aspect ratio;
# - short_side_crop: resize the short side to the target keeping the aspect ratio, then take the
#   centre square, as torchvision's ``Resize(size)`` + ``CenterCrop(size)`` do (the long side
#   becomes ``int(size * long / short)``, the crop offset ``int(round((long - size) / 2))``).
# - pad_square: pad the short side to a square with PAD_COLOR, image centred (mPLUG-Owl2's
#   expand2square), then resize both sides to the target: the default of the mPLUG-Owl2 presets.
# - pad_square_siglip: the same with SigLIP's mean colour (Bunny's expand2square): the default of
#   the Bunny presets.
RESIZES = ("squash", "short_side_crop", "pad_square", "pad_square_siglip")
#: The colour of ``pad_square``: CLIP's mean times 255, truncated, as mPLUG-Owl2 pads
#: (``tuple(int(x * 255) for x in image_mean)``, Q-Align q_align/evaluate/scorer.py:47):
#: (122, 116, 104).
PAD_COLOR = tuple(int(x * 255) for x in CLIP_MEAN)
#: The padding colour of each ``pad_square*`` mode (SigLIP's mean 0.5 times 255, truncated, for
#: Bunny, as its pre-processing computes it from the image processor's mean).
PAD_COLORS = {
    "pad_square": PAD_COLOR,
    "pad_square_siglip": tuple(int(x * 255) for x in SIGLIP_MEAN),
}


def check_resize(resize: str) -> str:
    """Return ``resize`` if it is a key of :data:`RESIZES`; otherwise say so, naming the key."""
    if resize not in RESIZES:
        raise ValueError(f"dataset.resize={resize!r} is not one of {list(RESIZES)}")
    return resize
