"""LLaVA family adapter (llava-hf checkpoints such as ``llava-hf/llava-1.5-7b-hf``).

LLaVA-1.5 (https://arxiv.org/abs/2310.03744): a CLIP ViT-L/14-336 vision tower, an MLP
projector and a Vicuna language model; one ``<image>`` placeholder per vision patch.
"""

from __future__ import annotations

import torch
from torch import nn

from iqa_lightning.models.backbones.base import Backbone
from iqa_lightning.models.backbones.registry import register_family
from iqa_lightning.models.backbones.text import USER_ASSISTANT

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT: ...</s>").
LLAVA_TEMPLATE = USER_ASSISTANT


@register_family
class LlavaBackbone(Backbone):
    """Adapter for ``LlavaForConditionalGeneration``.

    Args:
        model: The LLaVA model.
        tokenizer: Its tokenizer; must know the ``<image>`` token.
        image_size: Input side; must equal the vision tower's ``image_size``.
        image_mean: Vision tower normalisation mean (CLIP statistics for LLaVA-1.5).
        image_std: Vision tower normalisation std.
    """

    family = "llava"
    model_class = "LlavaForConditionalGeneration"
    template = LLAVA_TEMPLATE
    block_names = ("LlamaDecoderLayer", "CLIPEncoderLayer")
    tiny = ("iqa_lightning.models.backbones.tiny.build_tiny_llava",)
    fixed_side_tower = "LLaVA vision tower"

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_index)

    @property
    def num_image_tokens(self) -> int:
        vision = self.model.config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        full = self.model.config.vision_feature_select_strategy == "full"
        return patches + int(full)

    @property
    def vision_feature_dim(self) -> int:
        layers = self.model.config.vision_feature_layer
        count = len(layers) if isinstance(layers, (list, tuple)) else 1
        return self.model.config.vision_config.hidden_size * count

    @property
    def features_per_image(self) -> int:
        return self.num_image_tokens

    def pixel_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.normalize(pixels).to(self.dtype)}

    def projector(self) -> nn.Module:
        return self.model.model.multi_modal_projector

    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_tower


# Kept for configs and code that name the loader; the one builder is ``from_pretrained``.
load_llava = LlavaBackbone.from_pretrained
