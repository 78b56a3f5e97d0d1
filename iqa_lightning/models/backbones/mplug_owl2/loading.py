"""Loading a published mPLUG-Owl2 checkpoint folder as it is.

The folder holds the original ``config.json`` (``model_type: mplug_owl2``), the weights under
their original names (``pytorch_model.bin`` read with ``weights_only=True``, or
``*.safetensors``; single or sharded through the index json), LLaMA's SentencePiece
``tokenizer.model`` with its ``tokenizer_config.json`` (the legacy behaviour the checkpoints
were trained with is kept) and the CLIP ``preprocessor_config.json``. No code from the folder
runs. A hub id is fetched, or read from the local cache when ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from iqa_lightning.models.backbones.loading import load_pretrained, resolve_dtype
from iqa_lightning.models.backbones.mplug_owl2.configuration import MplugOwl2Config
from iqa_lightning.models.backbones.mplug_owl2.modeling import MplugOwl2ForCausalLM


def load_mplug_owl2(pretrained: str, dtype: str = "bfloat16", attn_implementation: str = "sdpa"):
    """Model, tokenizer and image statistics of an mPLUG-Owl2 checkpoint.

    Args:
        pretrained: Hub id or local folder (``model.pretrained``).
        dtype: Weight dtype name (``model.dtype``).
        attn_implementation: ``sdpa`` or ``eager`` (``model.attn_implementation``).

    Returns:
        ``(model, tokenizer, image_mean, image_std)``.

    Raises:
        FileNotFoundError: A local folder does not exist (names ``model.pretrained``).
        OSError: A file cannot be read or is not in the local cache offline (names the key).
        ValueError: The config is not an mPLUG-Owl2 one, or weights are missing from it.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(
            f"model.attn_implementation={attn_implementation!r}: mPLUG-Owl2 runs with sdpa or eager"
        )
    config = load_pretrained(MplugOwl2Config, pretrained, "mplug_owl2 config")
    found = MplugOwl2Config.get_config_dict(config.name_or_path or pretrained)[0].get("model_type")
    if found != "mplug_owl2":
        raise ValueError(
            f"model.pretrained={pretrained!r}: config.json has model_type {found!r}, "
            "not 'mplug_owl2'"
        )
    model, info = load_pretrained(
        MplugOwl2ForCausalLM,
        pretrained,
        "mplug_owl2 model",
        config=config,
        dtype=resolve_dtype(dtype),
        attn_implementation=attn_implementation,
        output_loading_info=True,
        weights_only=True,  # pytorch_model*.bin: tensors only, no pickled code
    )
    missing = [k for k in info.get("missing_keys", ()) if not k.endswith("_pos_embed")]
    if missing:
        raise ValueError(
            f"model.pretrained={pretrained!r}: the checkpoint lacks {len(missing)} weights of "
            f"mPLUG-Owl2, e.g. {sorted(missing)[:3]}"
        )
    tokenizer = load_pretrained(AutoTokenizer, pretrained, "tokenizer")
    processor = load_pretrained(AutoImageProcessor, pretrained, "image processor")
    return model, tokenizer, list(processor.image_mean), list(processor.image_std)
