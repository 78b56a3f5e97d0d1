"""Bunny family adapter (``BAAI/Bunny-v1_0-3B``, the base model of Q-Adapt).

Bunny (https://arxiv.org/abs/2402.11530): a SigLIP-so400m 384 px vision tower without its last
encoder layer, an ``mlp2x_gelu`` projector and a Phi-2 language model, in LLaVA's layout. The
published checkpoints are read into ``transformers``' ``LlavaForConditionalGeneration``
(:mod:`.bunny_checkpoint`: which part maps to which, and why the result is exact); a converted
folder (``model_type: llava``) loads directly.

Bunny's conversation template (``bunny/conversation.py``, ``conv_bunny``): a system sentence,
``" "``, ``USER: <image>\\n{question} ASSISTANT:``, each answer after a space and closed by
``<|endoftext|>``. Its images are padded to a square with the mean colour, then resized to 384
(``image_aspect_ratio: pad``; ``bunny/util/mm_utils.py``, ``process_images``).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from iqa_lightning.models.backbones.bunny_checkpoint import (
    bunny_llava_config,
    load_original,
    read_config,
)
from iqa_lightning.models.backbones.llava import LLAVA_TEMPLATE, LlavaBackbone
from iqa_lightning.models.backbones.registry import register_family
from iqa_lightning.models.backbones.tiny_settings import (
    seeded_backbone,
    text_settings,
    vision_settings,
)
from iqa_lightning.models.backbones.tokenizer import build_tiny_tokenizer
from iqa_lightning.preprocessing import SIGLIP_MEAN, SIGLIP_STD, check_resize

BUNNY_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# conv_bunny: sep " " after the system sentence and the user turn, sep2 "<|endoftext|>".
#: The loader's default for Bunny: expand2square with SigLIP's mean colour, then the resize.
RESIZE = "pad_square_siglip"

BUNNY_TEMPLATE = replace(LLAVA_TEMPLATE, system=BUNNY_SYSTEM + " ", answer_end="<|endoftext|>")


@register_family
class BunnyBackbone(LlavaBackbone):
    """Adapter for Bunny-v1.0 as ``LlavaForConditionalGeneration`` (Phi-2 + SigLIP).

    Args:
        model: The LLaVA model with a Phi text model and a SigLIP tower.
        tokenizer: Its tokenizer; must know the ``<image>`` token.
        image_size: Input side; must equal the vision tower's ``image_size``.
        image_mean: SigLIP's normalisation mean (0.5).
        image_std: SigLIP's normalisation std (0.5).
        normalization: ``backbone`` or ``imagenet``.
        resize: How images become square before this backbone, the loader's default
            (``dataset.resize``): ``pad_square_siglip``, Bunny's expand2square with SigLIP's
            mean colour.
    """

    family = "bunny"
    model_class = "LlavaForConditionalGeneration"
    template = BUNNY_TEMPLATE
    lora_targets = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
    block_names = ("PhiDecoderLayer", "SiglipEncoderLayer")
    tiny = ("iqa_lightning.models.backbones.bunny.build_tiny_bunny",)
    #: SigLIP has no class token: every feature is a patch (the Q-Adapt prompter drops none).
    features_have_class_token = False
    default_image_size = None  # the tower's (384 for Bunny-v1.0-3B)

    def __init__(self, *args, resize: str = RESIZE, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.resize = check_resize(resize)
        # An <image> row appended past Bunny's vocabulary (bunny_checkpoint.add_image_token)
        # is no word: the logits stop before it, as the original's do.
        vocab = self.model.config.text_config.vocab_size
        self.vocab_size = self.image_token_id if self.image_token_id == vocab - 1 else vocab
        if self.vocab_size < vocab:
            self._trim = self.lm_head().register_forward_hook(self._trim_logits)

    def _trim_logits(self, module, args, output):
        return output[..., : self.vocab_size]

    @classmethod
    def load_parts(cls, pretrained, dtype, attn_implementation, trust_remote_code):
        """A published Bunny (``model_type: bunny-phi``, e.g. ``BAAI/Bunny-v1_0-3B``) or a
        converted LLaVA folder; no remote code runs either way (``trust_remote_code`` is
        never needed, and so not used).

        Raises:
            ValueError: The folder is neither a Bunny nor a LLaVA checkpoint (names its
                ``model_type``).
        """
        config = read_config(pretrained)
        kind = config.get("model_type")
        if kind == "bunny-phi":
            return load_original(pretrained, config, dtype, attn_implementation)
        if kind == "llava":
            return super().load_parts(pretrained, dtype, attn_implementation, False)
        raise ValueError(
            f"model.pretrained={pretrained!r}: config.json has model_type={kind!r}; the "
            f"bunny family reads 'bunny-phi' (published) or 'llava' (converted) folders"
        )

    @property
    def num_image_tokens(self) -> int:
        vision = self.model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2  # every patch, no class token

    def final_norm(self) -> nn.Module:
        return self.language_model().final_layernorm


def build_tiny_bunny(
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_hidden_size: int | None = None,
    tokenizer: str = "byte_level",
    **settings,
) -> BunnyBackbone:
    """A random Bunny (SigLIP tower + mlp2x_gelu + Phi) a few MB in size.

    Args:
        image_size: Input side in pixels.
        patch_size: SigLIP patch side; ``(image_size / patch_size)**2`` image tokens.
        hidden_size: Phi width.
        num_layers: Layers of Phi and of the tower (as the model holds it, after Bunny's cut).
        vision_hidden_size: Tower width; ``None``: half of ``hidden_size``.
        tokenizer: ``byte_level`` (Phi-2's GPT-2 style) or ``sentencepiece``.
        **settings: ``seed``, ``gradient_checkpointing`` and ``normalization`` (SigLIP
            statistics or ImageNet's), as :func:`~.tiny_settings.seeded_backbone` takes them,
            and the adapter's ``resize`` (the loader's default square-making,
            ``pad_square_siglip``).
    """
    from transformers import LlavaForConditionalGeneration

    tokenizer = build_tiny_tokenizer(kind=tokenizer)
    width = vision_hidden_size or hidden_size // 2
    vision = {
        **vision_settings(width, num_layers, image_size, patch_size),
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    }
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text = {
        **text_settings(tokenizer, hidden_size, num_layers),
        "num_key_value_heads": 4,
        "partial_rotary_factor": 0.4,
        "hidden_act": "gelu_new",
        "bos_token_id": eot,
        "eos_token_id": eot,
    }
    config = bunny_llava_config(text, vision, tokenizer.convert_tokens_to_ids("<image>"))
    return seeded_backbone(
        BunnyBackbone,
        lambda: LlavaForConditionalGeneration(config),
        tokenizer,
        image_size,
        SIGLIP_MEAN,
        SIGLIP_STD,
        **settings,
    )


# Kept for configs and code that name the loader; the one builder is ``from_pretrained``.
load_bunny = BunnyBackbone.from_pretrained
