"""Tiny random backbones built from ``transformers`` configs, for tests and the demo.

They use the real model classes (``LlavaForConditionalGeneration``,
``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``) at a few layers and
tens of channels, with a tokenizer built locally in the family's own style (SentencePiece for
LLaVA's LLaMA, byte-level BPE for Qwen; either can be chosen with ``tokenizer=``), so every code
path of the real families runs with no download. Weights are drawn from
a fixed seed: the same call always builds the same frozen model, so a run folder that stores only
the trainable parameters can be re-evaluated later.
"""

from __future__ import annotations

from iqa_lightning.models.backbones.llava import LlavaBackbone
from iqa_lightning.models.backbones.qwen2_vl import Qwen2VLBackbone
from iqa_lightning.models.backbones.tiny_settings import (
    seeded_backbone,
    text_settings,
    vision_settings,
)
from iqa_lightning.models.backbones.tokenizer import build_tiny_tokenizer
from iqa_lightning.preprocessing import CLIP_MEAN, CLIP_STD


def build_tiny_llava(
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    tokenizer: str = "sentencepiece",
    **settings,
) -> LlavaBackbone:
    """A random LLaVA (CLIP vision tower + Llama LM) a few MB in size.

    Args:
        image_size: Input side in pixels.
        patch_size: Vision patch side; ``(image_size / patch_size)**2`` image tokens.
        hidden_size: Language model width (the vision tower is half as wide).
        num_layers: Layers in each tower.
        tokenizer: ``sentencepiece`` (LLaMA's style, as LLaVA ships it) or ``byte_level``.
        **settings: ``seed``, ``gradient_checkpointing`` and ``normalization`` (CLIP
            statistics or ImageNet's), as :func:`~.tiny_settings.seeded_backbone` takes them.
    """
    from transformers import LlavaForConditionalGeneration

    tokenizer = build_tiny_tokenizer(kind=tokenizer)
    config = tiny_llava_config(tokenizer, image_size, patch_size, hidden_size, num_layers)
    return seeded_backbone(
        LlavaBackbone,
        lambda: LlavaForConditionalGeneration(config),
        tokenizer,
        image_size,
        CLIP_MEAN,
        CLIP_STD,
        **settings,
    )


def tiny_llava_config(
    tokenizer,
    image_size: int,
    patch_size: int,
    hidden_size: int,
    num_layers: int,
    vision_hidden_size: int | None = None,
    vision_layers: int | None = None,
):
    """The ``LlavaConfig`` of a tiny LLaVA: a CLIP vision tower read at its second-to-last
    layer (as LLaVA-1.5), a Llama text model, ``tokenizer``'s vocabulary and special ids.

    Args:
        tokenizer: The model's tokenizer (must know ``<image>``).
        image_size: Input side in pixels.
        patch_size: Vision patch side.
        hidden_size: Language model width.
        num_layers: Language model layers (and vision layers unless ``vision_layers``).
        vision_hidden_size: Vision tower width; None: half of ``hidden_size``.
        vision_layers: Vision tower layers; None: ``num_layers``.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision_width = vision_hidden_size or hidden_size // 2
    vision = vision_settings(vision_width, vision_layers or num_layers, image_size, patch_size)
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**vision, projection_dim=vision_width),
        text_config=LlamaConfig(**text_settings(tokenizer, hidden_size, num_layers)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-2,
    )


def _qwen_text_config(tokenizer, hidden_size: int, num_layers: int) -> dict:
    text = text_settings(tokenizer, hidden_size, num_layers)
    half_head = hidden_size // text["num_attention_heads"] // 2
    section = [half_head - 2 * (half_head // 3), half_head // 3, half_head // 3]
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}
    return {**text, "rope_parameters": rope}


def _qwen_special_ids(tokenizer) -> dict:
    return {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }


def build_tiny_qwen2_vl(
    image_size: int = 112,
    hidden_size: int = 64,
    num_layers: int = 2,
    tokenizer: str = "byte_level",
    **settings,
) -> Qwen2VLBackbone:
    """A random Qwen2-VL (14-px patches, 2x2 merge, M-RoPE) a few MB in size.

    Args:
        image_size: Input side, a multiple of 28; ``(image_size / 28)**2`` image tokens.
        hidden_size: Language model width (the vision tower is half as wide).
        num_layers: Layers in each tower.
        tokenizer: ``byte_level`` (Qwen's style) or ``sentencepiece``.
        **settings: ``seed``, ``gradient_checkpointing`` and ``normalization`` (CLIP
            statistics or ImageNet's), as :func:`~.tiny_settings.seeded_backbone` takes them;
            ``min_pixels`` / ``max_pixels``: native-resolution bounds (``backbone.native``).
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = {
        "depth": num_layers,
        "embed_dim": hidden_size // 2,
        "hidden_size": hidden_size,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    parts = (Qwen2VLConfig, Qwen2VLForConditionalGeneration, vision, tokenizer)
    return _qwen(*parts, image_size, hidden_size, num_layers, settings)


def build_tiny_qwen2_5_vl(
    image_size: int = 112,
    hidden_size: int = 64,
    num_layers: int = 2,
    tokenizer: str = "byte_level",
    **settings,
) -> Qwen2VLBackbone:
    """A random Qwen2.5-VL a few MB in size: windowed vision attention (one full-attention
    block), RMSNorm + SwiGLU vision blocks whose width is ``vision_config.hidden_size``.

    Args:
        image_size: Input side, a multiple of 28; ``(image_size / 28)**2`` image tokens.
        hidden_size: Language model width (the vision tower is half as wide).
        num_layers: Layers in each tower; the last vision block attends over the whole image.
        tokenizer: ``byte_level`` (Qwen's style) or ``sentencepiece``.
        **settings: As :func:`build_tiny_qwen2_vl`.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = {
        "depth": num_layers,
        "hidden_size": hidden_size // 2,
        "intermediate_size": hidden_size,
        "out_hidden_size": hidden_size,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        # 56 px windows: a 112 px image has 2x2 windows, so window order != raster order.
        "window_size": 56,
        "fullatt_block_indexes": [num_layers - 1],
    }
    parts = (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, vision, tokenizer)
    return _qwen(*parts, image_size, hidden_size, num_layers, settings)


def _qwen(config_cls, model_cls, vision, tokenizer, image_size, hidden_size, num_layers, settings):
    """A Qwen-family backbone from a vision config, with the shared text config and tokens;
    ``min_pixels`` / ``max_pixels`` in ``settings`` give it native-resolution bounds
    (``backbone.native``, as :func:`~iqa_lightning.models.native_resolution.load_qwen2_vl_native`
    sets them)."""
    bounds = {k: settings.pop(k, None) for k in ("min_pixels", "max_pixels")}
    bounds = {k: v for k, v in bounds.items() if v is not None}
    tokenizer = build_tiny_tokenizer(kind=tokenizer)
    config = config_cls(
        vision_config=vision,
        text_config=_qwen_text_config(tokenizer, hidden_size, num_layers),
        **_qwen_special_ids(tokenizer),
    )
    backbone = seeded_backbone(
        Qwen2VLBackbone,
        lambda: model_cls(config),
        tokenizer,
        image_size,
        CLIP_MEAN,
        CLIP_STD,
        **settings,
    )
    if bounds:
        from iqa_lightning.models.native_resolution import NativeResolution

        backbone.native = NativeResolution(**bounds)
    return backbone
