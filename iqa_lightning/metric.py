"""A metric-style API, as pyiqa users know it: one call gives a module that scores images.

    import iqa_lightning

    metric = iqa_lightning.create_metric("one_align")            # a model preset (zero-shot)
    metric = iqa_lightning.create_metric("outputs/runs/<run>")   # a finished train.py run
    metric = iqa_lightning.create_metric("<RALI scorer folder>") # scorer.json or RALI's release
    scores = metric(images)            # images: [B, 3, H, W] in [0, 1], or paths / PIL images
    metric.lower_better, metric.score_range                   # False, (0.0, 1.0) for one_align

    loss_fn = iqa_lightning.create_metric("one_align", as_loss=True)
    loss = -loss_fn(restored).mean()   # higher is better: gradients reach the pixels of `restored`

Built on :class:`~iqa_lightning.scorer.Scorer`: paths and PIL images are decoded, resized and
batched exactly as ``Scorer`` (and ``python -m iqa_lightning.score``) do, so their scores are the
scorer's. An image tensor is scored by the same module's forward; one whose side differs from
the model's input size is resized in torch (bicubic with antialiasing, after padding to a square
with the model's fill or cropping the short side, as the model's ``resize`` says), which is close
to but not bit-identical with PIL's resize of the same image. Without ``as_loss`` tensors are
scored under ``torch.no_grad`` in batches of ``batch_size``; with it, in one differentiable pass
whose gradients reach the input pixels (the model's weights stay frozen).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from iqa_lightning.build import CONFIG_DIR
from iqa_lightning.errors import ConfigError
from iqa_lightning.scorer import Scorer

RUN_FILE = Path(".hydra") / "config.yaml"
RALI_FILES = ("scorer.json", "ckpt.pt")  # our scorer folder, RALI's release


def model_presets() -> list[str]:
    """The model presets of ``conf/model`` (the names :func:`create_metric` takes)."""
    return sorted(p.stem for p in Path(CONFIG_DIR, "model").glob("*.yaml"))


def _scorer(name: str | Path, quantization: str | None, options: dict[str, Any]) -> Scorer:
    folder = Path(str(name)).expanduser()
    if folder.is_dir() and (folder / RUN_FILE).is_file():
        return Scorer.from_run(folder, quantization=quantization, **options)
    if folder.is_dir() and any((folder / f).is_file() for f in RALI_FILES):
        if quantization:
            raise ConfigError(f"quantization={quantization}: {folder} is a RALI scorer, no LMM")
        return Scorer.from_rali(folder, **options)
    presets = model_presets()
    if str(name) in presets:
        overrides = [f"model.quantization={quantization}"] if quantization else []
        return Scorer.from_config(model=str(name), overrides=overrides, **options)
    close = difflib.get_close_matches(str(name), presets, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    kinds = f"a run ({RUN_FILE}) nor a RALI scorer ({' or '.join(RALI_FILES)})"
    what = f"the folder holds neither {kinds}" if folder.is_dir() else "no model preset or folder"
    raise ConfigError(
        f"create_metric({str(name)!r}): {what}; {hint}give a model preset "
        f"({', '.join(presets)}), a finished train.py run folder or a RALI scorer folder"
    )


def score_range(module: nn.Module) -> tuple[float, float]:
    """``(lowest, highest)`` score of a scoring module: its word-score head's weights, or the
    RALI scorer's ``score_range``."""
    scorer = getattr(module, "scorer", module)
    rali = getattr(scorer, "rali", None)
    if rali is not None:
        return tuple(float(x) for x in rali.score_range)
    weights = scorer.head.weights
    return float(weights.min()), float(weights.max())


def _fill(module: nn.Module) -> torch.Tensor:
    """The padding colour of ``pad_square``: the backbone's mean colour in [0, 1]."""
    backbone = getattr(module, "backbone", None)
    mean = getattr(backbone, "image_mean", None)
    return mean.flatten().float() if mean is not None else torch.full((3,), 0.5)


def resize_tensor(pixels: torch.Tensor, size: int, resize: str, fill: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` pixels as ``[B, 3, size, size]``, differentiably: ``squash`` resizes,
    ``pad_square*`` pads the short side with ``fill`` first, ``short_side_crop`` resizes the
    short side then crops the centre (the datasets' modes, in torch)."""
    height, width = pixels.shape[-2:]
    if (height, width) == (size, size):
        return pixels
    if resize.startswith("pad_square") and height != width:
        side = max(height, width)
        canvas = fill.to(pixels).view(1, 3, 1, 1).expand(pixels.shape[0], 3, side, side).clone()
        top, left = (side - height) // 2, (side - width) // 2
        canvas[..., top : top + height, left : left + width] = pixels
        pixels, height, width = canvas, side, side
    if resize == "short_side_crop" and height != width:
        scale = size / min(height, width)
        height, width = max(size, round(height * scale)), max(size, round(width * scale))
        pixels = F.interpolate(pixels, (height, width), mode="bicubic", antialias=True)
        top, left = (height - size) // 2, (width - size) // 2
        return pixels[..., top : top + size, left : left + size].clamp(0, 1)
    pixels = F.interpolate(pixels, (size, size), mode="bicubic", antialias=True)
    return pixels.clamp(0, 1)


class IQAMetric(nn.Module):
    """Scores images with a :class:`~iqa_lightning.scorer.Scorer`'s module (see the module
    docstring); made by :func:`create_metric`.

    Attributes:
        scorer: The Scorer (its module, input size, resize and Trainer).
        lower_better: False: every score here is higher for better quality.
        score_range: ``(lowest, highest)`` score the model can give.
        as_loss: Tensors are scored with gradients to the pixels.
    """

    lower_better = False

    def __init__(self, scorer: Scorer, as_loss: bool = False, device: str | None = None) -> None:
        super().__init__()
        self.scorer = scorer
        self.module = scorer.module.eval()
        self.as_loss = bool(as_loss)
        self.score_range = score_range(self.module)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module.to(self.device)
        self.register_buffer("fill", _fill(self.module), persistent=False)

    @property
    def image_size(self) -> int:
        return self.scorer.image_size

    def forward(
        self, images: torch.Tensor | Sequence[str | Path | Image.Image] | str | Path | Image.Image
    ) -> torch.Tensor:
        """Scores ``[B]`` (float32) of ``[B, 3, H, W]`` (or ``[3, H, W]``) pixels in [0, 1], or
        of image files / PIL images (through the Scorer: as the scoring CLI scores them)."""
        if not isinstance(images, torch.Tensor):
            return self.scorer(images)
        pixels = images[None] if images.dim() == 3 else images
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"images: expected [B, 3, H, W] pixels, got {list(images.shape)}")
        pixels = pixels.to(self.device, torch.float32)
        if self.as_loss:
            with torch.enable_grad():
                return self.module(self._resized(pixels)).float()
        with torch.no_grad():
            chunks = pixels.split(self.scorer.batch_size)
            return torch.cat([self.module(self._resized(c)).float() for c in chunks])

    def _resized(self, pixels: torch.Tensor) -> torch.Tensor:
        return resize_tensor(pixels, self.image_size, self.scorer.resize, self.fill)


def create_metric(
    name: str | Path,
    as_loss: bool = False,
    device: str | None = None,
    quantization: str | None = None,
    **options: Any,
) -> IQAMetric:
    """A metric module from a model preset (``"one_align"``, ``"tiny_llava_trained"``: zero-shot
    with the preset's own score head), a finished train.py run folder, or a RALI scorer folder.

    Args:
        name: The preset name or folder.
        as_loss: Score tensors with gradients to the pixels (for use as a loss).
        device: ``cuda`` / ``cpu`` for tensors (default: cuda when there is one).
        quantization: ``int8`` / ``int4``: load the LMM's weights quantised
            (:mod:`iqa_lightning.quantization`).
        **options: :class:`~iqa_lightning.scorer.Scorer` arguments (``batch_size``, ``resize``,
            ``accelerator``, ...).

    Raises:
        ConfigError: ``name`` is none of these; the message lists the presets and folders taken.
    """
    return IQAMetric(_scorer(name, quantization, options), as_loss=as_loss, device=device)
