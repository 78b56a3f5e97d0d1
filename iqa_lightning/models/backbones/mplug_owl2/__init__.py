"""mPLUG-Owl2 (https://arxiv.org/abs/2311.04257), native on current ``transformers``: the
configuration as published, the model with the checkpoints' parameter names, loading of the
published folders, the family adapter and a tiny random builder."""

from iqa_lightning.models.backbones.mplug_owl2.adapter import (
    OWL2_TEMPLATE,
    QALIGN_TEMPLATE,
    TEMPLATES,
    MplugOwl2Backbone,
)
from iqa_lightning.models.backbones.mplug_owl2.configuration import (
    MplugOwl2AbstractorConfig,
    MplugOwl2Config,
    MplugOwl2VisionConfig,
)
from iqa_lightning.models.backbones.mplug_owl2.loading import load_mplug_owl2
from iqa_lightning.models.backbones.mplug_owl2.modeling import (
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN_INDEX,
    MplugOwl2ForCausalLM,
    MplugOwl2Model,
)
from iqa_lightning.models.backbones.mplug_owl2.tiny import build_tiny_mplug_owl2

__all__ = [
    "IMAGE_PLACEHOLDER",
    "IMAGE_TOKEN_INDEX",
    "OWL2_TEMPLATE",
    "QALIGN_TEMPLATE",
    "TEMPLATES",
    "MplugOwl2AbstractorConfig",
    "MplugOwl2Backbone",
    "MplugOwl2Config",
    "MplugOwl2ForCausalLM",
    "MplugOwl2Model",
    "MplugOwl2VisionConfig",
    "build_tiny_mplug_owl2",
    "load_mplug_owl2",
]
