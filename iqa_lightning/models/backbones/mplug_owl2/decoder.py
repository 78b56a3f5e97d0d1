"""mPLUG-Owl2's modality-adaptive LLaMA decoder layer, built from ``transformers``' LLaMA parts.

mPLUG-Owl2 (https://arxiv.org/abs/2311.04257), Sec. 3.3, the modality-adaptive module: each
decoder layer has two input / post-attention RMSNorms and two key / value projections, one for
text tokens (modality 0) and one for visual tokens (modality 1), chosen per token by a modality
mask; the query and output projections and the MLP are shared. Parameter names follow the
checkpoints (``k_proj.multiway.0`` text, ``k_proj.multiway.1`` visual, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    apply_rotary_pos_emb,
)

from iqa_lightning.models.backbones.mplug_owl2.attention import attend

TEXT, VISUAL = 0, 1


class MultiwayNetwork(nn.Module):
    """One module per modality; each token goes through the module of its modality.

    Args:
        build: Makes one module (called once per modality).
        num_multiway: Number of modalities (2: text, visual).
    """

    def __init__(self, build: Callable[[], nn.Module], num_multiway: int = 2) -> None:
        super().__init__()
        self.multiway = nn.ModuleList(build() for _ in range(num_multiway))

    def forward(self, hidden_states: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Apply ``multiway[m]`` to the tokens whose ``modality`` is ``m``.

        Args:
            hidden_states: ``[B, L, D]``.
            modality: ``[B, L]`` integer modality of each token.
        """
        if len(self.multiway) == 1:
            return self.multiway[0](hidden_states)
        present = [m for m in range(len(self.multiway)) if bool((modality == m).any())]
        if len(present) == 1:  # one modality only (text-only steps): no gather / scatter
            return self.multiway[present[0]](hidden_states)
        out = None
        for m in present:
            selected = modality == m
            part = self.multiway[m](hidden_states[selected])
            if out is None:
                out = part.new_empty(*hidden_states.shape[:-1], part.shape[-1])
            out[selected] = part
        return out


class MplugOwl2Attention(nn.Module):
    """LLaMA attention whose key and value projections are multiway (one per modality)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        width, bias = config.hidden_size, config.attention_bias
        kv = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(width, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = MultiwayNetwork(lambda: nn.Linear(width, kv, bias=bias))
        self.v_proj = MultiwayNetwork(lambda: nn.Linear(width, kv, bias=bias))
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, width, bias=bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        modality: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache=None,
        **kwargs,
    ) -> torch.Tensor:
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states, modality).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states, modality).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        out = attend(
            self,
            self.config._attn_implementation,
            query,
            key,
            value,
            attention_mask,
            self.attention_dropout,
            **kwargs,
        )
        return self.o_proj(out.contiguous())


class MplugOwl2DecoderLayer(GradientCheckpointingLayer):
    """LLaMA's pre-norm block with modality-adaptive norms and key / value projections."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        width, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = MplugOwl2Attention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = MultiwayNetwork(lambda: LlamaRMSNorm(width, eps=eps))
        self.post_attention_layernorm = MultiwayNetwork(lambda: LlamaRMSNorm(width, eps=eps))

    def forward(
        self,
        hidden_states: torch.Tensor,
        modality: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache=None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.self_attn(
            self.input_layernorm(hidden_states, modality),
            modality,
            position_embeddings,
            attention_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states, modality))
        return residual + hidden_states
