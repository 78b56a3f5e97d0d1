"""Bunny checkpoints as published (``BAAI/Bunny-v1_0-3B``) read into ``transformers``' LLaVA.

Bunny-v1.0 (https://arxiv.org/abs/2402.11530) is LLaVA's layout with other parts, and each part
has an exact counterpart in ``transformers``: the SigLIP tower with its last encoder layer
deleted (``BAAI-DCAI/Bunny`` at 6986cac, ``bunny/model/multimodal_encoder/siglip/
siglip_encoder.py:574-597``: ``del layers[-1:]``, head -> Identity, features =
``hidden_states[-1]``, all 729 patches, before the post-layernorm) is a ``SiglipVisionModel``
one layer shorter read at ``vision_feature_layer=-1`` with ``vision_feature_select_strategy=
"full"``; the ``mlp2x_gelu`` projector (``multimodal_projector/builder.py``: Linear, exact
GELU, Linear) is ``LlavaMultiModalProjector`` with ``projector_hidden_act="gelu"``; the
language model is ``PhiModel`` and the LM head has no bias (``bunny_phi.py:32``), as
LLaVA's.

The published folder holds ``config.json`` (``model_type: bunny-phi``: Phi-2's keys plus
``mm_vision_tower``, ``mm_hidden_size``, ``mm_projector_type``, ``image_aspect_ratio``, ...),
sharded safetensors with the original parameter names, and a CodeGen tokenizer. Its vision
weights are in the checkpoint (26 of SigLIP-so400m's 27 layers); the tower's config comes from
``mm_vision_tower``: a known hub id (:data:`SIGLIP_TOWERS`, no download) or a folder (absolute,
or relative to the checkpoint) with the tower's ``config.json`` and ``preprocessor_config.json``.

The original splices the image at id -200 in code. Here the tokenizer gets an ``<image>`` token;
where its id lies past the vocabulary, one embedding / LM-head row is appended for it (zeros;
the embedding row is always overwritten by image features) and the adapter trims the logits
back to the original vocabulary, so logits, losses and generation are exactly the original's.

Save a converted folder (``model_type: llava``; loads with plain ``transformers`` too) with
:mod:`.bunny_convert`::

    python -m iqa_lightning.models.backbones.bunny_convert BAAI/Bunny-v1_0-3B /models/bunny-llava
"""

from __future__ import annotations

from pathlib import Path

import torch

from iqa_lightning.models.backbones.loading import load_pretrained, resolve_dtype
from iqa_lightning.preprocessing import SIGLIP_MEAN, SIGLIP_STD

IMAGE_TOKEN = "<image>"

#: SigLIP towers Bunny names in ``mm_vision_tower``, with their published configs (so the tower
#: needs no download: its weights are in the Bunny checkpoint).
SIGLIP_TOWERS = {
    "google/siglip-so400m-patch14-384": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    },
}

#: Original parameter names -> ``LlavaForConditionalGeneration``'s (regular expressions).
BUNNY_KEY_MAPPING = {
    r"^model\.vision_tower\.vision_tower\.": "model.vision_tower.",
    r"^model\.mm_projector\.0\.": "model.multi_modal_projector.linear_1.",
    r"^model\.mm_projector\.2\.": "model.multi_modal_projector.linear_2.",
    r"^model\.(embed_tokens|layers|final_layernorm)\.": r"model.language_model.\1.",
}

# Keys of Bunny's config.json that are not Phi's.
_BUNNY_KEYS = {
    "_name_or_path", "architectures", "auto_map", "model_type", "torch_dtype", "dtype",
    "transformers_version", "freeze_mm_mlp_adapter", "tune_mm_mlp_adapter", "image_aspect_ratio",
    "mm_hidden_size", "mm_projector_lr", "mm_projector_type", "mm_vision_tower", "use_mm_proj",
    "tokenizer_model_max_length", "tokenizer_padding_side", "continuous_training", "use_s2",
    "unfreeze_vision_tower", "mm_vision_select_layer", "mm_vision_select_feature",
}  # fmt: skip


class _ConfigDict:
    """``load_pretrained`` target that reads a checkpoint's ``config.json`` as a dict."""

    @staticmethod
    def from_pretrained(pretrained: str, **kwargs) -> dict:
        from transformers import PretrainedConfig

        return PretrainedConfig.get_config_dict(pretrained, **kwargs)[0]


def read_config(pretrained: str) -> dict:
    """The checkpoint's ``config.json`` (hub id or folder; errors name ``model.pretrained``)."""
    return load_pretrained(_ConfigDict, pretrained, "config.json")


def _tower_folder(pretrained: str, tower: str) -> Path | None:
    for candidate in (Path(tower).expanduser(), Path(pretrained).expanduser() / tower):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def vision_tower(pretrained: str, config: dict) -> tuple[dict, tuple, tuple]:
    """The SigLIP tower named by ``mm_vision_tower``: its config (all its layers, as published)
    and its image mean / std.

    Raises:
        ValueError: The tower is neither known nor a folder, or it is not a SigLIP tower; names
            the key and the file.
    """
    tower = config.get("mm_vision_tower")
    where = f"{pretrained}/config.json: mm_vision_tower={tower!r}"
    if tower in SIGLIP_TOWERS:
        return dict(SIGLIP_TOWERS[tower]), SIGLIP_MEAN, SIGLIP_STD
    folder = _tower_folder(pretrained, str(tower)) if tower else None
    if folder is None:
        raise ValueError(
            f"{where} is neither a known tower ({sorted(SIGLIP_TOWERS)}) nor a folder with a "
            f"config.json (absolute or relative to the checkpoint)"
        )
    from transformers import SiglipVisionConfig

    vision = SiglipVisionConfig.from_pretrained(str(folder))
    if vision.model_type != "siglip_vision_model":
        raise ValueError(f"{where}: {vision.model_type!r} is not a SigLIP tower")
    mean, std = SIGLIP_MEAN, SIGLIP_STD
    if (folder / "preprocessor_config.json").is_file():
        from transformers import SiglipImageProcessorPil

        processor = SiglipImageProcessorPil.from_pretrained(str(folder))
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "image_size", "patch_size", "hidden_act", "layer_norm_eps")  # fmt: skip
    return {k: getattr(vision, k) for k in keys}, mean, std


def bunny_llava_config(text: dict, vision: dict, image_token_index: int):
    """A ``LlavaConfig`` that computes what Bunny computes.

    Args:
        text: Phi keyword arguments (``PhiConfig``).
        vision: SigLIP keyword arguments of the tower as the model holds it (Bunny's tower
            already one layer short).
        image_token_index: Id of the ``<image>`` placeholder.
    """
    from transformers import LlavaConfig, PhiConfig, SiglipVisionConfig

    vision_config = SiglipVisionConfig(**vision, vision_use_head=False)
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision_config,
        text_config=PhiConfig(**text),
        image_token_index=image_token_index,
        image_seq_length=patches,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def add_image_token(tokenizer) -> int:
    """Give the tokenizer Bunny's ``<image>`` placeholder (special, never merged with text)."""
    from tokenizers import AddedToken

    if IMAGE_TOKEN not in tokenizer.get_vocab():
        token = AddedToken(IMAGE_TOKEN, special=True, normalized=False, lstrip=False, rstrip=False)
        tokenizer.add_tokens([token], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def load_original(
    pretrained: str, config: dict, dtype: str | torch.dtype, attn_implementation: str | None
):
    """Model, tokenizer and image statistics from a published Bunny folder or hub id.

    Raises:
        ValueError: A config value this conversion does not compute exactly
            (``mm_projector_type``), or weights that do not fit the converted model (names the
            folder and the first keys).
    """
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    projector = config.get("mm_projector_type", "mlp2x_gelu")
    if projector != "mlp2x_gelu":
        raise ValueError(
            f"{pretrained}/config.json: mm_projector_type={projector!r}; Bunny-v1.0's "
            f"'mlp2x_gelu' is the projector this conversion computes"
        )
    vision, mean, std = vision_tower(pretrained, config)
    vision["num_hidden_layers"] -= 1  # Bunny deletes the tower's last encoder layer
    tokenizer = load_pretrained(AutoTokenizer, pretrained, "tokenizer", trust_remote_code=False)
    image_id = add_image_token(tokenizer)
    text = {k: v for k, v in config.items() if k not in _BUNNY_KEYS}
    vocab = int(text["vocab_size"])
    llava = bunny_llava_config(text, vision, image_id)
    model, info = load_pretrained(
        LlavaForConditionalGeneration,
        pretrained,
        "Bunny model",
        config=llava,
        key_mapping=BUNNY_KEY_MAPPING,
        dtype=resolve_dtype(dtype),
        attn_implementation=attn_implementation,
        output_loading_info=True,
    )
    bad = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys")}
    bad = {k: v for k, v in bad.items() if v}
    if bad or info.get("mismatched_keys"):
        raise ValueError(
            f"model.pretrained={pretrained!r}: the weights do not fit Bunny-v1.0's layout "
            f"({ {k: v[:4] for k, v in bad.items()} }, mismatched {info.get('mismatched_keys')})"
        )
    if image_id >= vocab:
        _append_rows(model, image_id + 1)
    return model, tokenizer, mean, std


def _append_rows(model, size: int) -> None:
    """Grow the embedding and LM head to ``size`` rows, the new rows zero."""
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[old:] = 0
        model.get_output_embeddings().weight[old:] = 0


def save_converted(backbone, folder: str | Path) -> Path:
    """Write a loaded Bunny as a ``transformers`` LLaVA folder: model (safetensors), tokenizer
    with ``<image>`` and the SigLIP image processor. ``BunnyBackbone.from_pretrained`` and
    ``LlavaForConditionalGeneration.from_pretrained`` read it back."""
    from transformers import SiglipImageProcessorPil

    folder = Path(folder)
    # Current names: transformers would otherwise write the original Bunny names back.
    backbone.model.save_pretrained(folder, save_original_format=False)
    backbone.tokenizer.save_pretrained(folder)
    side = backbone.image_size
    SiglipImageProcessorPil(
        size={"height": side, "width": side},
        image_mean=backbone.image_mean.flatten().tolist(),
        image_std=backbone.image_std.flatten().tolist(),
    ).save_pretrained(folder)
    return folder


if __name__ == "__main__":  # the command's older name
    raise SystemExit(
        "the converter is: python -m iqa_lightning.models.backbones.bunny_convert SOURCE TARGET"
    )
