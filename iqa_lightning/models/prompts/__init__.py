"""Prompts: trainable parts that adapt what the frozen backbone sees."""

from iqa_lightning.models.prompts.pixel import (
    NoPrompt,
    OverlayPrompt,
    PaddingPrompt,
    PatchPrompt,
    PixelPrompt,
)

__all__ = ["NoPrompt", "OverlayPrompt", "PaddingPrompt", "PatchPrompt", "PixelPrompt"]
