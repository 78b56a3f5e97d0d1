"""A small byte-level BPE tokenizer built locally, for the tiny test and demo backbones.

Real backbones load their own tokenizer. The tiny ones need one that behaves like a real
byte-level BPE (Qwen2 style: a leading space is part of the token, ``"Ġgood"``), knows the
families' special tokens and encodes every quality word as a single token, without any download.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<image>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

QUALITY_WORDS = [
    "excellent", "good", "fair", "poor", "bad", "fine", "high", "low", "great", "terrible",
    "perfect", "average", "sharp", "blurry", "noisy", "clear", "bright", "dark",
]  # fmt: skip

_CORPUS = [
    "USER: Rate the technical quality of the image. ASSISTANT: The quality of the image is",
    "Rate the quality of the image. How would you rate the quality of this image?",
    "You are a helpful assistant. system user assistant",
    "Can you evaluate the quality of the image? The image is blurry, noisy, dark or bright.",
    "Which distortion does the image have? Answer with the option's letter from the given choices.",
    "A. B. C. D. Yes No",
    "The image has low contrast, jpeg compression artifacts, color saturation and pixelation.",
    "Describe the quality of the image in detail. The overall quality is",
]


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on a small fixed corpus.

    Training is deterministic, so every call returns the same vocabulary.

    Args:
        vocab_size: Target vocabulary size, special tokens included.

    Returns:
        A fast tokenizer with ``<pad>`` as padding token and left padding.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = " ".join(f"{w} {w.capitalize()}" for w in QUALITY_WORDS)
    # Repeat the quality words so BPE merges each into one token, with and without a space.
    letters = " ".join("ABCDEFGH")
    # Option letters must be single tokens too, with and without a leading space.
    corpus = _CORPUS * 4 + [f" {words} {words}"] * 8 + [words] * 8 + [f" {letters}"] * 8
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )
