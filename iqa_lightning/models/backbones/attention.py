"""Attention read-out of a backbone: the attention weights from the answer position to every
position of the sequence the language model sees, layer by layer.

:class:`AttentionReadout` is mixed into :class:`~iqa_lightning.models.backbones.base.Backbone`;
it needs the adapter's ``language_model()``, ``_forward``, ``image_token_id``,
``num_image_tokens`` and ``num_placeholders``. Attention weights exist only with eager attention
(``sdpa`` and flash attention never form them), so :meth:`~AttentionReadout.eager_attention`
switches the language model to eager for the read-out and back afterwards (the vision tower
keeps its own implementation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class AttentionReadout:
    """Attention weights at the answer position (see the module docstring)."""

    def attention_modules(self) -> list[nn.Module]:
        """The self-attention module of each decoder layer, in order; its forward returns
        ``(output, weights)`` with ``weights`` ``[B, heads, query, key]`` under eager attention.

        A family whose layers keep their attention elsewhere overrides this."""
        return [layer.self_attn for layer in self.language_model().layers]

    def _attention_owner(self) -> nn.Module:
        lm = self.language_model()
        return lm if hasattr(lm, "set_attn_implementation") else self.model

    @contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Within the block the language model runs eager attention (weights formed)."""
        owner = self._attention_owner()
        before = owner.config._attn_implementation
        if before != "eager":
            owner.set_attn_implementation("eager")
        try:
            yield
        finally:
            if before != "eager":
                owner.set_attn_implementation(before)

    def sequence_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where each prompt token lands in the language model's sequence.

        A family whose model splices the image in (:attr:`num_placeholders` fewer than
        :attr:`num_image_tokens`) expands each placeholder token into
        ``num_image_tokens / num_placeholders`` positions; every other token is one position.

        Args:
            input_ids: ``[B, L]`` prompt ids (left padding included).

        Returns:
            ``[B, L + 1]`` boundaries: prompt tokens ``[i, j)`` occupy sequence positions
            ``[out[:, i], out[:, j])``; ``out[:, -1]`` is the sequence length.

        Raises:
            ValueError: The image tokens are not a whole multiple of the placeholders.
        """
        tokens, placeholders = int(self.num_image_tokens), int(self.num_placeholders)
        if tokens % placeholders:
            raise ValueError(
                f"{self.family}: {tokens} image tokens do not split evenly over "
                f"{placeholders} placeholders"
            )
        width = 1 + (tokens // placeholders - 1) * (input_ids == self.image_token_id).long()
        zero = torch.zeros_like(width[:, :1])
        return torch.cat([zero, width.cumsum(-1)], dim=-1)

    def last_token_attention(
        self,
        pixels: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention from the last position (the answer position) to every position.

        Runs the model once with eager attention; a hook on each of
        :meth:`attention_modules` keeps only the last query row of its weights, so the full
        ``query x key`` maps are never held for all layers at once.

        Args:
            pixels: ``[B, 3, H, W]`` in [0, 1] (after any pixel prompt), or None for a
                text-only prompt.
            input_ids: ``[1, L]`` or ``[B, L]`` left-padded prompt ids.
            attention_mask: ``[B, L]``; all ones when None.

        Returns:
            ``[layers, B, heads, S]`` fp32 weights (each row sums to 1 over the ``S`` sequence
            positions; left padding gets 0).

        Raises:
            RuntimeError: A layer returned no weights (its attention ignores the switch).
        """
        rows: list[torch.Tensor | None] = []

        def keep_last_row(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            rows.append(None if weights is None else weights[:, :, -1].detach().float())

        handles = [m.register_forward_hook(keep_last_row) for m in self.attention_modules()]
        try:
            with self.eager_attention(), torch.no_grad():
                self._forward(pixels, input_ids, attention_mask, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
        if not rows or any(r is None for r in rows):
            raise RuntimeError(
                f"{self.family}: a decoder layer returned no attention weights under eager "
                "attention; override attention_modules() to name the modules that do"
            )
        return torch.stack(rows)
