"""Qwen2-VL and Qwen2.5-VL family adapter.

Qwen2-VL (https://arxiv.org/abs/2409.12191) and Qwen2.5-VL (https://arxiv.org/abs/2502.13923)
cut the image into 14x14 patches, stack two copies along time (``temporal_patch_size``), and the
vision tower merges 2x2 patches into one language token. The patchification below reproduces the
image processor's layout with differentiable tensor ops.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from iqa_lightning.models.backbones.base import Backbone, ChatTemplate
from iqa_lightning.models.backbones.registry import register_family

# Qwen2-VL's ChatML conversation format.
QWEN_TEMPLATE = ChatTemplate(
    system="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    first_user=(
        "<|im_start|>user\n<|vision_start|>{image}<|vision_end|>{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    next_user="<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
    answer_lead="",
    answer_end="<|im_end|>\n",
)


def patchify(
    pixels: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten normalised images into Qwen2-VL patches, as its image processor lays them out.

    Args:
        pixels: ``[B, C, H, W]`` normalised images; H and W multiples of patch*merge.
        patch_size: Vision patch side (14).
        merge_size: Spatial merge factor (2).
        temporal_patch_size: Frames per temporal patch (2); a still image is repeated.

    Returns:
        ``(patches [B * gh * gw, C * t * p * p], grid_thw [B, 3])``.
    """
    b, c, h, w = pixels.shape
    unit = patch_size * merge_size
    if h % unit or w % unit:
        raise ValueError(f"image side {h}x{w} must be a multiple of {unit} for Qwen2-VL")
    gh, gw = h // patch_size, w // patch_size
    x = pixels.unsqueeze(1).expand(b, temporal_patch_size, c, h, w)
    x = x.reshape(
        b, temporal_patch_size, c,
        gh // merge_size, merge_size, patch_size,
        gw // merge_size, merge_size, patch_size,
    )  # fmt: skip
    # -> b, gh/m, gw/m, m, m, c, t, p, p
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = x.reshape(b * gh * gw, c * temporal_patch_size * patch_size * patch_size)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long, device=pixels.device).expand(b, 3)
    return patches, grid


@register_family
class Qwen2VLBackbone(Backbone):
    """Adapter for ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.

    Args:
        model: The Qwen2-VL / Qwen2.5-VL model.
        tokenizer: Its tokenizer; must know ``<|image_pad|>``.
        image_size: Square input side, a multiple of ``patch_size * spatial_merge_size`` (28).
        image_mean: Normalisation mean (CLIP statistics for Qwen2-VL).
        image_std: Normalisation std.
    """

    family = "qwen2_vl"
    model_class = "AutoModelForImageTextToText"  # Qwen2-VL and Qwen2.5-VL checkpoints alike
    template = QWEN_TEMPLATE
    vision_lora_targets = ("qkv", "proj", "fc1", "fc2", "gate_proj", "up_proj", "down_proj")
    block_names = (
        "Qwen2VLDecoderLayer", "Qwen2VLVisionBlock",
        "Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock",
    )  # fmt: skip
    tiny = (
        "iqa_lightning.models.backbones.tiny.build_tiny_qwen2_vl",
        "iqa_lightning.models.backbones.tiny.build_tiny_qwen2_5_vl",
    )
    default_image_size = 448

    def check_image_size(self, model: nn.Module, image_size: int) -> None:
        vision = model.config.vision_config
        unit = vision.patch_size * vision.spatial_merge_size
        if int(image_size) % unit:
            raise ValueError(f"model.image_size={image_size} must be a multiple of {unit}")

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def num_image_tokens(self) -> int:
        vision = self.model.config.vision_config
        side = self.image_size // (vision.patch_size * vision.spatial_merge_size)
        return side * side

    @property
    def vision_feature_dim(self) -> int:
        # The merger's input width: ``embed_dim`` in Qwen2-VL's vision config, ``hidden_size``
        # in Qwen2.5-VL's (whose ``embed_dim`` does not exist); read it off the merger's norm.
        return int(self.projector().ln_q.weight.shape[0])

    @property
    def features_per_image(self) -> int:
        # The merger sees every 14-px patch; it merges 2x2 of them into one language token.
        return (self.image_size // self.model.config.vision_config.patch_size) ** 2

    def pixel_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        vision = self.model.config.vision_config
        patches, grid = patchify(
            self.normalize(pixels),
            vision.patch_size,
            vision.spatial_merge_size,
            vision.temporal_patch_size,
        )
        return {"pixel_values": patches.to(self.dtype), "image_grid_thw": grid}

    def text_inputs(self, input_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        # M-RoPE positions come from the ids, the image grid and the mask inside the model;
        # recent transformers also need the modality of each token to lay them out.
        if "mm_token_type_ids" not in inspect.signature(self.model.forward).parameters:
            return {}
        return {"mm_token_type_ids": (input_ids == self.image_token_id).int()}

    def projector(self) -> nn.Module:
        return self.model.model.visual.merger

    def vision_tower(self) -> nn.Module:
        return self.model.model.visual


# Kept for configs and code that name the loader; the one builder is ``from_pretrained``.
load_qwen2_vl = Qwen2VLBackbone.from_pretrained
