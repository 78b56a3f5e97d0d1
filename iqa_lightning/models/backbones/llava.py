"""LLaVA family adapter (llava-hf checkpoints such as ``llava-hf/llava-1.5-7b-hf``).

LLaVA-1.5 (https://arxiv.org/abs/2310.03744): a CLIP ViT-L/14-336 vision tower, an MLP
projector and a Vicuna language model; one ``<image>`` placeholder per vision patch.
"""

from __future__ import annotations

import torch
from torch import nn

from iqa_lightning.models.backbones.base import Backbone, ChatTemplate
from iqa_lightning.models.backbones.registry import register_family

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT: ...</s>").
LLAVA_TEMPLATE = ChatTemplate(
    system="",
    first_user="USER: {image}\n{question} ASSISTANT:",
    next_user="USER: {question} ASSISTANT:",
    answer_lead=" ",
    answer_end="</s>",
)


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

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        image_size: int,
        image_mean,
        image_std,
        normalization: str = "backbone",
    ) -> None:
        vision = model.config.vision_config
        if int(image_size) != vision.image_size:
            raise ValueError(
                f"model.image_size={image_size} but the LLaVA vision tower takes "
                f"{vision.image_size}x{vision.image_size} images"
            )
        super().__init__(model, tokenizer, image_size, image_mean, image_std, normalization)

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
