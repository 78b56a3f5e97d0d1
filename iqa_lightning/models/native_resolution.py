"""Qwen2-VL / Qwen2.5-VL at their native resolution: each image keeps its aspect ratio and gets
its own patch grid, as the family's image processor lays it out (``min_pixels`` /
``max_pixels``: the bounds of the resized image's area).

:func:`smart_resize` is the processor's rule for the resized side lengths (multiples of
``patch_size * merge_size`` = 28, area within the bounds, aspect ratio kept as closely as the
multiples allow); :class:`NativeResolution` resizes ``[3, H, W]`` images in [0, 1] to it (bicubic,
in torch, so a pixel prompt keeps its gradients), normalises with the backbone's statistics and
cuts the patches with the same layout as the fixed square path
(:func:`~iqa_lightning.models.backbones.qwen2_vl.patchify`). ``image_grid_thw`` therefore equals
the processor's for every image size; the pixel values differ from the processor's only by the
resampling filter (PIL's on uint8 there, torch's on floats here) and are identical where no
resize is needed.

Pixel prompts (padding, patch, overlay) are drawn on the fixed square (``model.image_size``)
and keep that path: the native path takes no pixel prompt.

``model=q_insight`` and ``model=visualquality_r1`` load through :func:`load_qwen2_vl_native`,
which sets the bounds their authors' scripts set (``min_pixels=3136``,
``max_pixels=12845056``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from iqa_lightning.errors import ConfigError
from iqa_lightning.models.backbones.qwen2_vl import Qwen2VLBackbone, patchify

#: The processor's defaults (Qwen2VLImageProcessor): 56*56 and 28*28*1280.
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280
MAX_ASPECT = 200


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The side lengths an image of ``height x width`` is resized to: multiples of ``factor``,
    area in ``[min_pixels, max_pixels]``, aspect ratio kept as closely as those allow.

    Raises:
        ValueError: An aspect ratio above 200 (the processor refuses it too).
    """
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ValueError(
            f"an image of {height}x{width} has an aspect ratio above {MAX_ASPECT}; Qwen2-VL "
            "cannot read it"
        )
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


@dataclass
class NativeResolution:
    """Per-image patch grids for a Qwen2-VL family backbone.

    Attributes:
        min_pixels: Smallest resized area (``model.min_pixels``).
        max_pixels: Largest resized area (``model.max_pixels``).
    """

    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not 0 < int(self.min_pixels) <= int(self.max_pixels):
            raise ConfigError(
                f"model.min_pixels={self.min_pixels} and model.max_pixels={self.max_pixels} "
                "must satisfy 0 < min_pixels <= max_pixels"
            )

    @staticmethod
    def _vision(backbone) -> object:
        if not isinstance(backbone, Qwen2VLBackbone):
            raise ConfigError(
                f"native resolution (model.min_pixels / model.max_pixels) is for the Qwen2-VL "
                f"family; this backbone is {backbone.family}"
            )
        return backbone.model.config.vision_config

    def size(self, backbone, height: int, width: int) -> tuple[int, int]:
        """The resized ``(height, width)`` of an image."""
        vision = self._vision(backbone)
        factor = vision.patch_size * vision.spatial_merge_size
        return smart_resize(height, width, factor, int(self.min_pixels), int(self.max_pixels))

    def grid(self, backbone, height: int, width: int) -> tuple[int, int, int]:
        """``(t, h, w)`` patches of an image, as ``image_grid_thw``."""
        patch = self._vision(backbone).patch_size
        h, w = self.size(backbone, height, width)
        return 1, h // patch, w // patch

    def image_tokens(self, backbone, grid: Sequence[int]) -> int:
        """Language tokens of an image of this grid (after the 2x2 merge)."""
        merge = self._vision(backbone).spatial_merge_size
        t, h, w = (int(x) for x in grid)
        return t * h * w // (merge * merge)

    def pixel_inputs(
        self, backbone, images: Sequence[torch.Tensor], n: int = 1
    ) -> tuple[list[tuple[int, int, int]], dict[str, torch.Tensor]]:
        """Grids of the images and the model's image keyword arguments (``pixel_values``,
        ``image_grid_thw``), each image repeated ``n`` times (image-major).

        Args:
            backbone: A :class:`~iqa_lightning.models.backbones.qwen2_vl.Qwen2VLBackbone`.
            images: ``[3, H, W]`` tensors in [0, 1], each at its own size.
            n: Copies of each image (answers drawn per image).
        """
        vision = self._vision(backbone)
        device = backbone.image_mean.device
        grids, patches, rows = [], [], []
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"an image is {tuple(image.shape)}; give [3, H, W] tensors")
            h, w = self.size(backbone, int(image.shape[1]), int(image.shape[2]))
            x = image.to(device).float()[None]
            if (h, w) != tuple(image.shape[1:]):
                x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
            x = (x - backbone.image_mean) / backbone.image_std
            cut, grid = patchify(
                x, vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
            )
            grids.append(tuple(int(g) for g in grid[0]))
            for _ in range(n):
                patches.append(cut)
                rows.append(grid)
        return grids, {
            "pixel_values": torch.cat(patches).to(backbone.dtype),
            "image_grid_thw": torch.cat(rows),
        }


def load_qwen2_vl_native(
    pretrained: str,
    subfolder: str | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    **settings,
) -> Qwen2VLBackbone:
    """A Qwen2-VL / Qwen2.5-VL checkpoint with native-resolution bounds (``backbone.native``).

    Args:
        pretrained: Hub id or local folder.
        subfolder: The checkpoint's folder inside the hub repository (Q-Insight's
            ``score_degradation``); None: the repository's root.
        min_pixels, max_pixels: :class:`NativeResolution` bounds.
        **settings: :meth:`~iqa_lightning.models.backbones.base.Backbone.from_pretrained`
            arguments (``image_size``, ``dtype``, ...).
    """
    native = NativeResolution(min_pixels, max_pixels)
    if subfolder:
        pretrained = _subfolder(pretrained, subfolder)
    backbone = Qwen2VLBackbone.from_pretrained(pretrained, **settings)
    backbone.native = native
    return backbone


def _subfolder(pretrained: str, subfolder: str) -> str:
    """The local path of ``subfolder`` of a hub repository (fetched, or from the cache when
    offline) or of a local folder."""
    from pathlib import Path

    local = Path(pretrained).expanduser()
    if local.is_dir():
        path = local / subfolder
    else:
        from huggingface_hub import snapshot_download

        try:
            path = (
                Path(snapshot_download(pretrained, allow_patterns=[f"{subfolder}/*"])) / subfolder
            )
        except Exception as err:  # the hub's errors vary by version; name the key instead
            raise OSError(
                f"model.pretrained={pretrained!r} model.subfolder={subfolder!r}: cannot fetch "
                f"the checkpoint ({type(err).__name__}: {err})"
            ) from err
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.subfolder={subfolder!r}: no config.json in {path}")
    return str(path)


__all__ = ["NativeResolution", "load_qwen2_vl_native", "smart_resize"]
