"""The frozen LMM behind one small adapter per model family.

An adapter hides what differs between families: the chat template and image placeholder tokens,
how [0, 1] pixels become the model's ``pixel_values`` (normalised with the backbone's own mean and
std, patchified where the family needs it, all differentiable so a pixel prompt gets gradients),
and where the answer position is. Prompts and score heads only ever talk to this interface.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a config string such as ``"bfloat16"`` to a torch dtype.

    Raises:
        ValueError: The name is not a known dtype; the message names ``model.dtype``.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_pretrained(loader, pretrained: str, what: str, **kwargs):
    """Call ``loader.from_pretrained`` and turn a failure into an error naming the config key.

    A local folder (a path starting with ``/``, ``.`` or ``~``) must exist; a hub id is fetched
    online or read from the local cache when ``HF_HUB_OFFLINE=1`` (``huggingface_hub`` respects it).
    """
    if pretrained.startswith(("/", ".", "~")) and not Path(pretrained).expanduser().is_dir():
        raise FileNotFoundError(f"model.pretrained={pretrained!r}: no such folder")
    try:
        return loader.from_pretrained(
            str(Path(pretrained).expanduser()) if pretrained.startswith("~") else pretrained,
            **kwargs,
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            " (HF_HUB_OFFLINE is set: the files must already be in the local cache)"
            if offline
            else ""
        )
        raise OSError(
            f"model.pretrained={pretrained!r}: cannot load the {what}{hint}: {err}"
        ) from err


class Backbone(nn.Module):
    """A frozen multimodal LM that scores the token after an answer prefix.

    Subclasses implement the family-specific parts: :meth:`build_prompt`, :meth:`pixel_inputs`
    and :attr:`num_image_tokens`.

    Args:
        model: The ``transformers`` model (``...ForConditionalGeneration``).
        tokenizer: Its tokenizer.
        image_size: Side of the square input image in pixels.
        image_mean: Per-channel mean the backbone was trained with.
        image_std: Per-channel std the backbone was trained with.
    """

    family = "base"

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.register_buffer(
            "image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer(
            "image_std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.freeze()

    # ----------------------------------------------------------------- freezing
    def freeze(self) -> None:
        """Freeze every backbone weight and put the model in eval mode."""
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> Backbone:
        """Keep the frozen model in eval mode (no dropout) whatever Lightning asks."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ----------------------------------------------------------- family parts
    @property
    def num_image_tokens(self) -> int:
        """How many placeholder tokens one image occupies in the prompt."""
        raise NotImplementedError

    def build_prompt(self, question: str, answer_prefix: str) -> str:
        """The full prompt text, image placeholders expanded, ending with ``answer_prefix``."""
        raise NotImplementedError

    def pixel_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Turn [0, 1] pixels ``[B, 3, H, W]`` into the model's image keyword arguments."""
        raise NotImplementedError

    def text_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-token keyword arguments the family's forward needs (none by default)."""
        return {}

    def projector(self) -> nn.Module:
        """The module that maps vision features into the language model's embedding space."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise [0, 1] pixels with the backbone's own statistics (differentiable)."""
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"pixels are {tuple(pixels.shape[-2:])}, the backbone expects "
                f"{self.image_size}x{self.image_size} (model.image_size)"
            )
        return (pixels.float() - self.image_mean) / self.image_std

    def encode_prompt(self, question: str, answer_prefix: str) -> torch.Tensor:
        """Token ids ``[1, L]`` of the prompt, checked to hold exactly one image's placeholders."""
        text = self.build_prompt(question, answer_prefix)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=True).input_ids
        found = int((ids == self.image_token_id).sum())
        if found != self.num_image_tokens:
            raise ValueError(
                f"{type(self).__name__}: the prompt holds {found} image tokens, the vision tower "
                f"gives {self.num_image_tokens}; check the tokenizer's image token"
            )
        return ids

    def answer_token_id(self, answer_prefix: str, word: str) -> int:
        """The single token id that ``word`` becomes right after ``answer_prefix``.

        Encodes the prefix with and without ``" " + word`` and takes the difference, so the
        word is looked up in the form the model really sees (leading-space form included).

        Raises:
            ValueError: The word is not exactly one token of this tokenizer; names the word.
        """
        base = self.tokenizer(answer_prefix, add_special_tokens=False).input_ids
        full = self.tokenizer(f"{answer_prefix} {word}", add_special_tokens=False).input_ids
        extra = full[len(base) :]
        if full[: len(base)] != base or len(extra) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(extra or full)
            raise ValueError(
                f"score word {word!r} is not a single token of the {self.family} tokenizer after "
                f"{answer_prefix!r} (it becomes {pieces}); choose another word in the score config"
            )
        return extra[0]

    def next_token_logits(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits of the token that follows the prompt, one row per image, in fp32.

        Args:
            pixels: ``[B, 3, H, W]`` in [0, 1] at ``image_size`` (after any pixel prompt).
            input_ids: ``[1, L]`` or ``[B, L]`` prompt ids from :meth:`encode_prompt`.

        Returns:
            ``[B, vocab]`` float32 logits at the answer position.
        """
        batch = pixels.shape[0]
        input_ids = input_ids.to(pixels.device)
        if input_ids.shape[0] == 1 and batch > 1:
            input_ids = input_ids.expand(batch, -1)
        out = self.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            logits_to_keep=1,
            use_cache=False,
            **self.text_inputs(input_ids),
            **self.pixel_inputs(pixels),
        )
        return out.logits[:, -1].float()

    @property
    def image_token_id(self) -> int:
        raise NotImplementedError
