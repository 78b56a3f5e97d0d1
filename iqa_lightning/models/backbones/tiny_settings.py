"""What every tiny random builder shares (:mod:`.tiny`, :func:`.bunny.build_tiny_bunny`,
:func:`.mplug_owl2.tiny.build_tiny_mplug_owl2`): the settings of a tiny LLaMA-style language
model and of a tiny ViT, and the last step, which draws the weights from a fixed seed and wraps
the model in its family's adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def text_settings(tokenizer, hidden_size: int, num_layers: int) -> dict:
    """A tiny LLaMA-style language model's config keys: ``tokenizer``'s vocabulary and special
    ids, 4 attention heads over 2 key / value heads, an MLP twice as wide as ``hidden_size``,
    1024 positions. A family adds or replaces its own keys."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def vision_settings(width: int, num_layers: int, image_size: int, patch_size: int) -> dict:
    """A tiny ViT's config keys: 2 attention heads, an MLP twice as wide as ``width``."""
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def seeded_backbone(
    backbone_cls: type,
    build_model: Callable[[], nn.Module],
    tokenizer,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    seed: int = 0,
    gradient_checkpointing: bool = False,
    normalization: str = "backbone",
    **options,
):
    """The adapter around ``build_model()``, whose weights are drawn from ``seed`` (torch's
    global generator is left as it was): the same call always builds the same frozen model.

    Args:
        backbone_cls: The family's adapter class.
        build_model: Builds the random model.
        tokenizer: Its tokenizer.
        image_size: Input side in pixels.
        image_mean: The family's normalisation mean.
        image_std: The family's normalisation std.
        seed: Weight initialisation seed.
        gradient_checkpointing: Recompute block activations in the backward pass.
        normalization: ``backbone`` (the family's statistics) or ``imagenet``.
        **options: The adapter's own options (``resize``, ``template``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model()
    backbone = backbone_cls(
        model, tokenizer, image_size, image_mean, image_std, normalization, **options
    )
    return backbone.set_gradient_checkpointing(gradient_checkpointing)
