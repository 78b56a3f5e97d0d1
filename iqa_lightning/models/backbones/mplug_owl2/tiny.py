"""A tiny random mPLUG-Owl2 for tests and the demo: the real classes at a few layers and tens of
channels, with the local SentencePiece tokenizer in LLaMA's style, built from a fixed seed."""

from __future__ import annotations

from iqa_lightning.models.backbones.mplug_owl2.adapter import RESIZE, MplugOwl2Backbone
from iqa_lightning.models.backbones.tokenizer import build_tiny_tokenizer
from iqa_lightning.preprocessing import CLIP_MEAN, CLIP_STD


def build_tiny_mplug_owl2(
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_queries: int = 8,
    seed: int = 0,
    gradient_checkpointing: bool = False,
    tokenizer: str = "sentencepiece",
    normalization: str = "backbone",
    template: str = "owl2",
    resize: str = RESIZE,
    attn_implementation: str = "sdpa",
) -> MplugOwl2Backbone:
    """A random mPLUG-Owl2 (ViT + abstractor + modality-adaptive LLaMA) under a few MB.

    Args:
        image_size: Input side in pixels.
        patch_size: ViT patch side; the abstractor reads ``(image_size / patch_size)**2 + 1``
            tokens.
        hidden_size: Language model width (the ViT and the abstractor are half as wide).
        num_layers: Layers in the language model, the ViT and the abstractor each.
        num_queries: The abstractor's learnable queries (``num_queries + 1`` image tokens).
        seed: Weight initialisation seed.
        gradient_checkpointing: Recompute block activations in the backward pass.
        tokenizer: ``sentencepiece`` (LLaMA's style, as mPLUG-Owl2 ships it) or ``byte_level``.
        normalization: ``backbone`` (CLIP statistics) or ``imagenet``.
        template: ``owl2`` or ``qalign``.
        resize: The loader's default square-making for this backbone.
        attn_implementation: ``sdpa`` or ``eager``.
    """
    import torch

    from iqa_lightning.models.backbones.mplug_owl2.configuration import MplugOwl2Config
    from iqa_lightning.models.backbones.mplug_owl2.modeling import MplugOwl2ForCausalLM

    tok = build_tiny_tokenizer(kind=tokenizer)
    width = hidden_size // 2
    visual = {
        "visual_model": {
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
        },
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
    config = MplugOwl2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        visual_config=visual,
    )
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MplugOwl2ForCausalLM(config)
        _perturb_norms(model)
    backbone = MplugOwl2Backbone(
        model, tok, image_size, CLIP_MEAN, CLIP_STD, normalization, template, resize
    )
    return backbone.set_gradient_checkpointing(gradient_checkpointing)


def _perturb_norms(model) -> None:
    """Move every norm weight off one (a fresh init sets them all to one), so the text and
    visual branches of each multiway norm differ and a swapped branch shows."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.add_(0.1 * torch.randn_like(param))
