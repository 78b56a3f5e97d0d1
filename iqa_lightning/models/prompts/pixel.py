"""Pixel-space visual prompts for a frozen LMM.

"Parameter-efficient adaptation via pixel-level visual prompts" (arXiv 2509.03494, reference
code mplug2-vp-for-nriqa), after the padding / patch prompts of Bahng et al. (arXiv 2203.17274).

A prompt is a learnable tensor placed on a canvas the size of the image. The canvas is zero where
the prompt has no parameters, so ``delta * tanh(canvas)`` is zero there too and both modes leave
those pixels untouched:

- ``add``: ``x + delta * tanh(canvas)``
- ``mul``: ``x * (1 + delta * tanh(canvas))`` (a factor of exactly 1 outside the prompt; the
  reference code multiplies by a zero canvas, which blacks the rest of the image out)
- ``mul_reference``: ``x * delta * tanh(canvas)``, the reference's mul exactly
  (mplug2-vp-for-nriqa src/prompters.py:57, 112, 138), kept to reproduce it

The result is clamped to [0, 1]. The backbone normalises afterwards, with its own statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("add", "mul", "mul_reference")


class PixelPrompt(nn.Module):
    """Base class: subclasses build the canvas from their parameters.

    Args:
        image_size: Side of the square image the prompt is applied to (``model.image_size``).
        mode: ``add`` or ``mul``.
        delta: Largest change the prompt can make (scale of ``tanh``).
        init_scale: Std of the normal initialisation of the raw parameters (0 starts from the
            identity).
    """

    group = "prompt"

    def __init__(
        self, image_size: int, mode: str = "add", delta: float = 1.0, init_scale: float = 0.0
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"prompt.mode={mode!r} must be one of {MODES}")
        if delta <= 0:
            raise ValueError(f"prompt.delta={delta} must be positive")
        self.image_size = int(image_size)
        self.mode = mode
        self.delta = float(delta)
        self.init_scale = float(init_scale)

    def _param(self, *shape: int) -> nn.Parameter:
        return nn.Parameter(torch.randn(3, *shape) * self.init_scale)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this prompt trains (its ``group``), by name relative to it."""
        return dict(self.named_parameters())

    def canvas(self) -> torch.Tensor:
        """The raw prompt on a ``[3, R, R]`` canvas, zero where there are no parameters."""
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Apply the prompt to ``[B, 3, R, R]`` pixels in [0, 1]; returns the same shape."""
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"prompt built for {self.image_size}x{self.image_size} images "
                f"(prompt.image_size) got {tuple(pixels.shape[-2:])}"
            )
        change = self.delta * torch.tanh(self.canvas()).to(pixels.dtype)
        if self.mode == "add":
            out = pixels + change
        elif self.mode == "mul":
            out = pixels * (1 + change)
        else:
            out = pixels * change
        return out.clamp(0.0, 1.0)

    def render(self) -> torch.Tensor:
        """The prompt as an image ``[3, R, R]`` in [0, 1] (applied to mid-grey), for plots."""
        grey = torch.full((1, 3, self.image_size, self.image_size), 0.5)
        with torch.no_grad():
            return self(grey.to(next(self.parameters()).device))[0].cpu()


class NoPrompt(nn.Module):
    """Identity: the frozen backbone sees the images unchanged (zero-shot or other parts)."""

    group = "prompt"

    def __init__(self, image_size: int | None = None, **_: object) -> None:
        super().__init__()
        self.image_size = image_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this prompt trains (its ``group``), by name relative to it."""
        return dict(self.named_parameters())


class PaddingPrompt(PixelPrompt):
    """A frame ``size`` pixels wide around the image: ``3 * (R**2 - (R - 2*size)**2)`` values.

    Args:
        size: Frame width in pixels; ``2 * size < image_size``.
    """

    def __init__(self, image_size: int, size: int = 30, **kwargs) -> None:
        super().__init__(image_size, **kwargs)
        r, s = self.image_size, int(size)
        if not 0 < 2 * s < r:
            raise ValueError(f"prompt.size={s} must satisfy 0 < 2*size < model.image_size={r}")
        self.size = s
        self.pad_up = self._param(s, r)
        self.pad_down = self._param(s, r)
        self.pad_left = self._param(r - 2 * s, s)
        self.pad_right = self._param(r - 2 * s, s)

    def canvas(self) -> torch.Tensor:
        r, s = self.image_size, self.size
        centre = self.pad_left.new_zeros(3, r - 2 * s, r - 2 * s)
        middle = torch.cat([self.pad_left, centre, self.pad_right], dim=2)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=1)


class PatchPrompt(PixelPrompt):
    """A square patch of side ``size`` at the centre or the top-left corner: ``3 * size**2``.

    Args:
        size: Patch side in pixels, at most ``image_size``.
        position: ``center`` or ``topleft``.
    """

    def __init__(self, image_size: int, size: int = 30, position: str = "center", **kwargs):
        super().__init__(image_size, **kwargs)
        r, s = self.image_size, int(size)
        if not 0 < s <= r:
            raise ValueError(f"prompt.size={s} must satisfy 0 < size <= model.image_size={r}")
        if position not in ("center", "topleft"):
            raise ValueError(f"prompt.position={position!r} must be 'center' or 'topleft'")
        self.size = s
        self.position = position
        self.patch = self._param(s, s)

    def canvas(self) -> torch.Tensor:
        r, s = self.image_size, self.size
        # r // 2 - s // 2 as the reference places it (src/prompters.py:93-95); with an odd side
        # this is one pixel lower-right of (r - s) // 2.
        top = r // 2 - s // 2 if self.position == "center" else 0
        # F.pad takes (left, right, top, bottom) for the last two dims.
        return F.pad(self.patch, (top, r - s - top, top, r - s - top))


class OverlayPrompt(PixelPrompt):
    """A prompt over the whole image: ``3 * R**2`` values (``size`` is ignored)."""

    def __init__(self, image_size: int, size: int | None = None, **kwargs) -> None:
        super().__init__(image_size, **kwargs)
        self.size = self.image_size
        self.overlay = self._param(self.image_size, self.image_size)

    def canvas(self) -> torch.Tensor:
        return self.overlay
