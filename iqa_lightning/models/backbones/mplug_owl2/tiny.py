"""A tiny random mPLUG-Owl2 for tests and the demo: the real classes at a few layers and tens of
channels, with the local SentencePiece tokenizer in LLaMA's style, built from a fixed seed."""

from __future__ import annotations

import torch

from iqa_lightning.models.backbones.mplug_owl2.adapter import MplugOwl2Backbone
from iqa_lightning.models.backbones.mplug_owl2.configuration import MplugOwl2Config
from iqa_lightning.models.backbones.mplug_owl2.modeling import MplugOwl2ForCausalLM
from iqa_lightning.models.backbones.tiny_settings import (
    seeded_backbone,
    text_settings,
    vision_settings,
)
from iqa_lightning.models.backbones.tokenizer import build_tiny_tokenizer
from iqa_lightning.preprocessing import CLIP_MEAN, CLIP_STD


def build_tiny_mplug_owl2(
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_queries: int = 8,
    tokenizer: str = "sentencepiece",
    attn_implementation: str = "sdpa",
    **settings,
) -> MplugOwl2Backbone:
    """A random mPLUG-Owl2 (ViT + abstractor + modality-adaptive LLaMA) under a few MB.

    Args:
        image_size: Input side in pixels.
        patch_size: ViT patch side; the abstractor reads ``(image_size / patch_size)**2 + 1``
            tokens.
        hidden_size: Language model width (the ViT and the abstractor are half as wide).
        num_layers: Layers in the language model, the ViT and the abstractor each.
        num_queries: The abstractor's learnable queries (``num_queries + 1`` image tokens).
        tokenizer: ``sentencepiece`` (LLaMA's style, as mPLUG-Owl2 ships it) or ``byte_level``.
        attn_implementation: ``sdpa`` or ``eager``.
        **settings: ``seed``, ``gradient_checkpointing`` and ``normalization`` (CLIP
            statistics or ImageNet's), as :func:`~..tiny_settings.seeded_backbone` takes them,
            and the adapter's ``template`` (``owl2`` or ``qalign``) and ``resize`` (the
            loader's default square-making), as :class:`~.adapter.MplugOwl2Backbone` takes them.
    """
    tok = build_tiny_tokenizer(kind=tokenizer)
    width = hidden_size // 2
    visual = {
        "visual_model": vision_settings(width, num_layers, image_size, patch_size),
        "visual_abstractor": {
            "num_learnable_queries": num_queries,
            "hidden_size": width,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 2,
            "intermediate_size": 2 * width,
            "encoder_hidden_size": width,
            "grid_size": image_size // patch_size,
        },
    }
    config = MplugOwl2Config(**text_settings(tok, hidden_size, num_layers), visual_config=visual)
    config._attn_implementation = attn_implementation
    return seeded_backbone(
        MplugOwl2Backbone,
        lambda: _perturb_norms(MplugOwl2ForCausalLM(config)),
        tok,
        image_size,
        CLIP_MEAN,
        CLIP_STD,
        **settings,
    )


def _perturb_norms(model: MplugOwl2ForCausalLM) -> MplugOwl2ForCausalLM:
    """Move every norm weight off one (a fresh init sets them all to one), so the text and
    visual branches of each multiway norm differ and a swapped branch shows."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.add_(0.1 * torch.randn_like(param))
    return model
