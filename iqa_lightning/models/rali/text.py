"""CLIP text embeddings of teacher texts, for RALI distillation (arXiv 2510.11369).

RALI aligns CLIP image embeddings with the CLIP text embeddings of what a reasoning LMM says
about each image. CLIP's text tower reads at most 77 tokens (``<|startoftext|>``, 75 content
tokens, ``<|endoftext|>``), and a teacher's reasoning is often longer, so
:class:`TextEmbedder` embeds long texts by this rule (the reference publishes no training code,
so the rule is ours):

1. tokenize the whole text without special tokens;
2. cut the tokens into consecutive windows of ``window - 2`` (75) tokens, the last one shorter;
3. wrap each window in ``<|startoftext|> ... <|endoftext|>`` and embed it
   (``get_text_features``: the projected end-of-text state) -> ``c_1 .. c_n``;
4. the text's embedding: direction ``normalize(mean_i(c_i / |c_i|))``, length ``mean_i |c_i|``.

A text of one window is embedded exactly as CLIP embeds it plainly (``c_1``); the length is
kept so that image and text features share the PCA standardisation of the scorer.

The text tower is the one of the student's own CLIP
(:class:`~iqa_lightning.models.rali.clip.CLIPEncoder`), so text and image features share one
joint space before the scorer's PCA.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TextEmbedder"]


class TextEmbedder(nn.Module):
    """CLIP text embeddings of any length (module docstring: the window rule).

    Args:
        model: A ``transformers`` ``CLIPModel`` (its ``text_model`` and ``text_projection`` run).
        tokenizer: Its tokenizer (``bos_token_id``, ``eos_token_id``, ``pad_token_id``).
        window: Tokens per window, the two special tokens included (CLIP: 77).
    """

    def __init__(self, model: nn.Module, tokenizer, window: int = 77) -> None:
        super().__init__()
        if window < 3:
            raise ValueError(f"text window={window}: needs room for two special tokens and text")
        limit = int(model.config.text_config.max_position_embeddings)
        if window > limit:
            raise ValueError(f"text window={window} exceeds the text tower's {limit} positions")
        self.text_model = model.text_model
        self.text_projection = model.text_projection
        self.requires_grad_(False)
        self.tokenizer = tokenizer
        self.window = int(window)

    @classmethod
    def from_encoder(cls, encoder, window: int = 77) -> TextEmbedder:
        """The text side of a :class:`~iqa_lightning.models.rali.clip.CLIPEncoder`."""
        return cls(encoder.model, encoder.tokenizer, window)

    @property
    def dim(self) -> int:
        return int(self.text_projection.out_features)

    def windows(self, text: str) -> list[list[int]]:
        """Token ids of each window of ``text``, special tokens included (one at least)."""
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        size = self.window - 2
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        return [[bos, *chunk, eos] for chunk in chunks]

    @torch.no_grad()
    def embed_windows(self, windows: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[n, dim]`` fp32 features of already tokenized windows (padded to the longest)."""
        device = self.text_projection.weight.device
        length = max(len(w) for w in windows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(windows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(windows), length), dtype=torch.long)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = torch.tensor(window)
            mask[row, : len(window)] = 1
        out = self.text_model(input_ids=ids.to(device), attention_mask=mask.to(device))
        return self.text_projection(out.pooler_output).float()

    @torch.no_grad()
    def forward(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """``[len(texts), dim]`` fp32 embeddings by the window rule, on the CPU."""
        owners, windows = [], []
        for index, text in enumerate(texts):
            for window in self.windows(text):
                owners.append(index)
                windows.append(window)
        feats = torch.cat(
            [
                self.embed_windows(windows[i : i + batch_size]).cpu()
                for i in range(0, len(windows), batch_size)
            ]
        ) if windows else torch.zeros(0, self.dim)  # fmt: skip
        owner = torch.tensor(owners, dtype=torch.long)
        count = torch.bincount(owner, minlength=len(texts)).clamp(min=1).unsqueeze(1).float()
        norms = feats.norm(dim=1, keepdim=True)
        direction = torch.zeros(len(texts), self.dim).index_add_(0, owner, feats / norms)
        length = torch.zeros(len(texts), 1).index_add_(0, owner, norms) / count
        return F.normalize(direction, dim=1) * length
