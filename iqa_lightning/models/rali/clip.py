"""CLIP encoders for RALI's scorer (arXiv 2510.11369, https://arxiv.org/abs/2510.11369).

:class:`CLIPEncoder` holds a ``transformers`` ``CLIPModel`` (image AND text towers: the scorer
runs the image tower, distillation embeds teacher texts with the text tower,
:class:`~iqa_lightning.models.rali.text.TextEmbedder`), its tokenizer and
the image statistics its processor uses. Two presets build one (``conf/rali_encoder/``):

* :func:`build_tiny_clip` (``tiny_clip``): a random CLIP from a config, tens of channels, a
  byte-level CLIP BPE tokenizer built locally; seeded, offline;
* :func:`load_clip` (``clip_l14_336``): a pretrained folder or hub name such as
  ``openai/clip-vit-large-patch14-336``.

:func:`vision_tower` turns a ``CLIPModel`` into the ``CLIPVisionModelWithProjection`` the scorer
holds, sharing (not copying) the image tower's weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from iqa_lightning.preprocessing import CLIP_MEAN, CLIP_STD

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class CLIPEncoder:
    """A CLIP model with what is needed to feed it.

    Attributes:
        model: The ``CLIPModel`` (``vision_model``, ``visual_projection``, ``text_model``,
            ``text_projection``).
        tokenizer: Its CLIP tokenizer (77 tokens at most for the real models).
        image_size: Input side in pixels (``crop_size`` of its processor).
        image_mean: Per-channel mean the processor normalises with.
        image_std: Per-channel standard deviation.
    """

    model: CLIPModel
    tokenizer: Any
    image_size: int
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def vision(self) -> CLIPVisionModelWithProjection:
        """The image tower and projection as one model (weights shared with :attr:`model`)."""
        return vision_tower(self.model)


def vision_tower(clip: CLIPModel | CLIPVisionModelWithProjection) -> CLIPVisionModelWithProjection:
    """``clip``'s image tower + projection as a ``CLIPVisionModelWithProjection``.

    A ``CLIPModel``'s ``vision_model`` and ``visual_projection`` are shared, not copied, so
    training one trains the other; a ``CLIPVisionModelWithProjection`` is returned as it is.
    """
    if isinstance(clip, CLIPVisionModelWithProjection):
        return clip
    if not isinstance(clip, CLIPModel):
        raise TypeError(f"expected a CLIPModel or CLIPVisionModelWithProjection, got {type(clip)}")
    config = CLIPVisionConfig(
        **{**clip.config.vision_config.to_dict(), "projection_dim": clip.config.projection_dim}
    )
    with torch.device("meta"):
        tower = CLIPVisionModelWithProjection(config)
    tower.vision_model = clip.vision_model
    tower.visual_projection = clip.visual_projection
    return tower.to(dtype=clip.dtype)


def byte_vocab() -> tuple[dict[str, int], list[str]]:
    """A CLIP-style byte-level BPE vocabulary: every byte with and without ``</w>``, a few
    merges of common letters, ``<|startoftext|>`` and ``<|endoftext|>`` (GPT-2's byte map)."""
    chars = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    chars += list(range(ord("®"), ord("ÿ") + 1))
    mapped, n = list(chars), 0
    for b in range(256):
        if b not in chars:
            chars.append(b)
            mapped.append(256 + n)
            n += 1
    symbols = [chr(c) for c in mapped]
    tokens = symbols + [s + "</w>" for s in symbols]
    merges = ["t h", "th e</w>", "i n", "a n", "e r", "o n", "q u", "qu a", "l i", "t y</w>"]
    for merge in merges:
        tokens.append(merge.replace(" ", ""))
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_tiny_tokenizer() -> Any:
    """A CLIP tokenizer on :func:`byte_vocab` (no download)."""
    vocab, merges = byte_vocab()
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges])


def tiny_clip_config(
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    projection_dim: int = 24,
    num_layers: int = 2,
    vocab_size: int | None = None,
) -> CLIPConfig:
    """The ``CLIPConfig`` of :func:`build_tiny_clip` (two heads per layer, MLP 2x wide)."""
    vocab = vocab_size or len(byte_vocab()[0])
    tower = {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 2,
    }
    return CLIPConfig(
        text_config={
            **tower,
            "vocab_size": vocab,
            "max_position_embeddings": 77,
            "bos_token_id": vocab - 2,  # byte_vocab ends with <|startoftext|>, <|endoftext|>
            "eos_token_id": vocab - 1,
            "pad_token_id": vocab - 1,
        },
        vision_config={**tower, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )


def build_tiny_clip(
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    projection_dim: int = 24,
    num_layers: int = 2,
    seed: int = 0,
) -> CLIPEncoder:
    """A random CLIP (both towers) a few hundred kB in size; the same seed gives the same model.

    Args:
        image_size: Input side in pixels.
        patch_size: Patch side; ``(image_size / patch_size)**2`` patches plus the class token.
        hidden_size: Width of each tower.
        projection_dim: Size of the joint image-text embedding.
        num_layers: Layers in each tower.
        seed: Weight initialisation seed.
    """
    tokenizer = build_tiny_tokenizer()
    config = tiny_clip_config(
        image_size, patch_size, hidden_size, projection_dim, num_layers, len(tokenizer)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return CLIPEncoder(model.eval(), tokenizer, image_size)


def preprocessor_settings(folder: str | Path) -> dict[str, Any]:
    """``image_size``, ``image_mean``, ``image_std`` of a CLIP folder's
    ``preprocessor_config.json`` (defaults: the config's image size, OpenAI CLIP statistics)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    size = config.get("vision_config", {}).get("image_size", 224)
    settings = {"image_size": int(size), "image_mean": CLIP_MEAN, "image_std": CLIP_STD}
    file = folder / "preprocessor_config.json"
    if file.is_file():
        pre = json.loads(file.read_text())
        crop = pre.get("crop_size", size)
        settings["image_size"] = int(crop.get("height", size) if isinstance(crop, dict) else crop)
        settings["image_mean"] = tuple(float(x) for x in pre.get("image_mean", CLIP_MEAN))
        settings["image_std"] = tuple(float(x) for x in pre.get("image_std", CLIP_STD))
    return settings


def load_clip(
    pretrained: str, dtype: str = "float32", image_size: int | None = None
) -> CLIPEncoder:
    """A pretrained CLIP (``openai/clip-vit-large-patch14-336`` or a local folder).

    Args:
        pretrained: Hub name or folder with ``config.json``, weights, tokenizer and processor.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        image_size: The crop size the preset declares (what the data loaders resize to);
            None: not checked.

    Raises:
        ValueError: ``image_size`` is not the processor's crop size.
    """
    from transformers import AutoTokenizer, CLIPImageProcessor

    model = CLIPModel.from_pretrained(pretrained, dtype=getattr(torch, dtype))
    processor = CLIPImageProcessor.from_pretrained(pretrained)
    crop = processor.crop_size
    size = int(crop if isinstance(crop, int) else getattr(crop, "height", None) or crop["height"])
    if image_size is not None and int(image_size) != size:
        raise ValueError(
            f"rali_encoder.image_size={image_size}, but {pretrained} crops to {size} px"
        )
    return CLIPEncoder(
        model.eval(),
        AutoTokenizer.from_pretrained(pretrained),
        size,
        tuple(processor.image_mean),
        tuple(processor.image_std),
    )


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIPEncoder",
    "build_tiny_clip",
    "build_tiny_tokenizer",
    "byte_vocab",
    "load_clip",
    "preprocessor_settings",
    "tiny_clip_config",
    "vision_tower",
]
