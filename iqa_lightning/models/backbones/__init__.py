"""Backbone adapters, one per LMM family, and tiny random builders for tests and the demo."""

from iqa_lightning.models.backbones.base import Backbone, resolve_dtype
from iqa_lightning.models.backbones.llava import LlavaBackbone, load_llava
from iqa_lightning.models.backbones.qwen2_vl import Qwen2VLBackbone, load_qwen2_vl, patchify
from iqa_lightning.models.backbones.tiny import (
    build_tiny_llava,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
)

__all__ = [
    "Backbone",
    "LlavaBackbone",
    "Qwen2VLBackbone",
    "build_tiny_llava",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen2_vl",
    "load_llava",
    "load_qwen2_vl",
    "patchify",
    "resolve_dtype",
]
