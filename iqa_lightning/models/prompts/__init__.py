"""Prompts: trainable parts that adapt what the frozen backbone sees."""

from iqa_lightning.models.prompts.pixel import (
    NoPrompt,
    OverlayPrompt,
    PaddingPrompt,
    PatchPrompt,
    PixelPrompt,
)
from iqa_lightning.models.prompts.qadapt import QAdaptPrompt, load_instructblip_qformer

__all__ = [
    "NoPrompt",
    "OverlayPrompt",
    "PaddingPrompt",
    "PatchPrompt",
    "PixelPrompt",
    "QAdaptPrompt",
    "load_instructblip_qformer",
]
