"""Small tokenizers built locally, for the tiny test and demo backbones.

Real backbones load their own tokenizer. The tiny ones need tokenizers that behave like the real
families' do, without any download, in both styles the families use:

- byte-level BPE (Qwen2 / GPT-2 style): a leading space is part of the token (``"Ġgood"``);
- SentencePiece BPE (LLaMA / Vicuna style, as ``llava-hf`` ships it in ``tokenizer.json``): the
  normaliser prepends ``▁`` to every text segment and turns spaces into ``▁``, so a text that
  starts with a space becomes a lone ``▁`` followed by the word (``" The"`` -> ``▁ ▁The``), text
  after a special token starts with ``▁`` too, unknown characters fall back to ``<0xNN>`` byte
  tokens, and ``<s>`` is added in front.

Both know the families' special tokens and encode every quality word and option letter as a
single token, with and without the leading space. Training is deterministic: every call returns
the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

TOKENIZER_KINDS = ("byte_level", "sentencepiece")

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

SPACE = "\u2581"  # SentencePiece's word-boundary mark


def _training_corpus(extra: Sequence[str] = ()) -> list[str]:
    words = " ".join(f"{w} {w.capitalize()}" for w in QUALITY_WORDS)
    # Repeat the quality words so BPE merges each into one token, with and without a space
    # (a word opens Qwen's answer right after "assistant\n"); option letters must be single
    # tokens too.
    lines = "".join(f"\n{w}\n{w.capitalize()}" for w in QUALITY_WORDS)
    letters = " ".join("ABCDEFGH")
    base = _CORPUS * 4 + [f" {words} {words}"] * 8 + [words] * 8 + [lines] * 8
    return base + [f" {letters}"] * 8 + list(extra)


def build_tiny_tokenizer(
    vocab_size: int = 512, kind: str = "byte_level", corpus: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """A small tokenizer of either family style.

    Args:
        vocab_size: Target vocabulary size, special tokens included (the SentencePiece one adds
            its 256 byte-fallback tokens on top).
        kind: ``byte_level`` (Qwen2 style) or ``sentencepiece`` (LLaMA style).
        corpus: More training text (the trained tiny model's vocabulary), after the fixed one.

    Returns:
        A fast tokenizer with ``<pad>`` as padding token and left padding.
    """
    if kind == "byte_level":
        return _byte_level(vocab_size, corpus)
    if kind == "sentencepiece":
        return _sentencepiece(vocab_size, corpus)
    raise ValueError(f"model.tokenizer={kind!r} is not one of {list(TOKENIZER_KINDS)}")


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )


def _byte_level(vocab_size: int, corpus: Sequence[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(corpus), trainer=trainer)
    return _wrap(tok)


def _sentencepiece(vocab_size: int, corpus: Sequence[str]) -> PreTrainedTokenizerFast:
    # Learn pieces that never cross a word boundary (SentencePiece's split_by_whitespace), then
    # lay the vocabulary out as LLaMA's: <unk> <s> </s>, the 256 byte tokens, the pieces.
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", "isolated"),  # LLaMA never merges a newline with letters
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first"),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    learner.train_from_iterator(_training_corpus(corpus), trainer=trainer)
    learned = learner.get_vocab()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    for piece, _ in sorted(learned.items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in _merges(learner)]

    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)]
    )
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1),
        ]
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")]
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS[3:]]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return _wrap(tok)


def _merges(tok: Tokenizer) -> list:
    """The learned merges of a trained BPE tokenizer, in rank order."""
    import json

    return json.loads(tok.to_str())["model"]["merges"]
