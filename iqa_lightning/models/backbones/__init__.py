"""Backbone adapters, one per LMM family, and tiny random builders for tests and the demo."""

from iqa_lightning.models.backbones.base import Backbone, resolve_dtype
from iqa_lightning.models.backbones.bunny import BunnyBackbone, build_tiny_bunny, load_bunny
from iqa_lightning.models.backbones.llava import LlavaBackbone, load_llava
from iqa_lightning.models.backbones.mplug_owl2 import (
    MplugOwl2Backbone,
    build_tiny_mplug_owl2,
    load_mplug_owl2,
)
from iqa_lightning.models.backbones.qwen2_vl import Qwen2VLBackbone, load_qwen2_vl, patchify
from iqa_lightning.models.backbones.registry import FAMILIES, family, register_family, tiny_builders
from iqa_lightning.models.backbones.tiny import (
    build_tiny_llava,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
)

__all__ = [
    "FAMILIES",
    "Backbone",
    "BunnyBackbone",
    "LlavaBackbone",
    "MplugOwl2Backbone",
    "Qwen2VLBackbone",
    "build_tiny_bunny",
    "build_tiny_llava",
    "build_tiny_mplug_owl2",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen2_vl",
    "family",
    "load_bunny",
    "load_llava",
    "load_mplug_owl2",
    "load_qwen2_vl",
    "patchify",
    "register_family",
    "resolve_dtype",
    "tiny_builders",
]
