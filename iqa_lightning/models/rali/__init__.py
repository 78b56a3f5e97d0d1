"""RALI's LLM-free scorer (arXiv 2510.11369, https://arxiv.org/abs/2510.11369): a CLIP image
encoder, a frozen PCA and scored basis vectors; its CLIP presets; RALI's published files."""

from iqa_lightning.models.rali.clip import (
    CLIPEncoder,
    build_tiny_clip,
    load_clip,
    vision_tower,
)
from iqa_lightning.models.rali.pca_pickle import PCAFileError, UnsafePickleError, load_pca
from iqa_lightning.models.rali.published import PublishedFormatError
from iqa_lightning.models.rali.scorer import RALIScorer, load_scorer

__all__ = [
    "CLIPEncoder",
    "PCAFileError",
    "PublishedFormatError",
    "RALIScorer",
    "UnsafePickleError",
    "build_tiny_clip",
    "load_clip",
    "load_pca",
    "load_scorer",
    "vision_tower",
]
