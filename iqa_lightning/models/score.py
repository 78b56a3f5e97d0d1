"""Quality scores from the logits of quality words at the answer position.

One rule covers both conventions of the field: a softmax over the logits of a few words only,
then a weighted sum of their probabilities.

- Q-Align (arXiv 2312.17090): words excellent/good/fair/poor/bad, weights 1, .75, .5, .25, 0.
- mplug2-vp (arXiv 2509.03494): positive and negative words, weight 1 for the positive group and
  0 for the negative one, so the score is P(positive group), e.g. good+fine vs poor+bad.

Computed in fp32 with ``log_softmax`` (the reference code's fp16 ``exp`` over logits overflows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class WordScore(nn.Module):
    """Score = sum_i w_i * softmax(logits[words])_i, in [min(w), max(w)].

    Args:
        words: Quality words; each must be one token of the backbone's tokenizer after the
            answer prefix (checked by :meth:`bind`).
        weights: One weight per word.
        question: The instruction shown with the image.
        answer_prefix: The text the answer starts with; the word follows it. Empty: the word is
            the first token of the answer, read right after the assistant marker (the
            visual-prompt reference reads it there, after ``ASSISTANT:``).
        name: Short name for logs.
    """

    def __init__(
        self,
        words: Sequence[str],
        weights: Sequence[float],
        question: str = "Rate the technical quality of the image.",
        answer_prefix: str = "The quality of the image is",
        name: str = "score",
    ) -> None:
        super().__init__()
        words, weights = [str(w) for w in words], [float(w) for w in weights]
        repeated = [w for i, w in enumerate(words) if w in words[:i]]
        if repeated:
            raise ValueError(
                f"score.words={words}: {', '.join(repr(w) for w in dict.fromkeys(repeated))} "
                "appears more than once; each word must be listed once"
            )
        if len(words) < 2:
            raise ValueError(f"score.words={words}: give at least 2 words")
        if len(words) != len(weights):
            raise ValueError(
                f"score.words ({len(words)}) and score.weights ({len(weights)}) must have the "
                "same length, one weight per word"
            )
        self.words = words
        self.question = question
        self.answer_prefix = answer_prefix
        self.name = name
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), False)
        self.register_buffer("token_ids", torch.zeros(len(words), dtype=torch.long), False)
        self._bound = False

    def bind(self, backbone) -> WordScore:
        """Look up each word's token id in the backbone's tokenizer.

        Raises:
            ValueError: A word is not a single token; the message names it.
        """
        if self.answer_prefix:
            ids = [backbone.answer_token_id(self.answer_prefix, w) for w in self.words]
        else:
            ids = [backbone.first_answer_token_id(w) for w in self.words]
        if len(set(ids)) != len(ids):
            raise ValueError(f"score.words {self.words} map to repeated token ids {ids}")
        self.token_ids.copy_(torch.tensor(ids, dtype=torch.long))
        self._bound = True
        return self

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, len(words)]`` probabilities from ``[B, vocab]`` next-token logits."""
        if not self._bound:
            raise RuntimeError("WordScore.bind(backbone) must run before scoring")
        picked = logits.float().index_select(-1, self.token_ids)
        return torch.log_softmax(picked, dim=-1).exp()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B]`` fp32 scores from ``[B, vocab]`` next-token logits, also under bf16 autocast and
        when the module was cast to a half type."""
        with torch.autocast(logits.device.type, enabled=False):
            return self.probabilities(logits) @ self.weights.float()
