"""mPLUG-Owl2's vision side: its own ViT and the visual abstractor, with the original parameter
names (``vision_model.*`` and ``visual_abstractor.*`` in the checkpoints).

mPLUG-Owl2 (https://arxiv.org/abs/2311.04257), Sec. 3.2: a ViT-L/14 encodes the image into
patch tokens (plus a class token); the abstractor's learnable queries cross-attend to them (keys
are the queries and the image tokens together, with fixed sin-cos positions added to queries and
keys) and are projected to the language model's width, followed by a learned end-of-image token.
Attention runs through ``transformers``' attention interface (``sdpa`` or ``eager``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from iqa_lightning.models.backbones.mplug_owl2.attention import attend
from iqa_lightning.models.backbones.mplug_owl2.configuration import (
    MplugOwl2AbstractorConfig,
    MplugOwl2VisionConfig,
)


def _attention(module: nn.Module, query, key, value) -> torch.Tensor:
    """Unmasked, non-causal attention of ``[B, heads, L, d]`` tensors -> ``[B, L, heads * d]``."""
    implementation = module.attn_config._attn_implementation
    return attend(module, implementation, query, key, value, None, module.dropout, is_causal=False)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """MAE's 1-D sin-cos embedding ``[M, dim]`` of ``positions`` (sin half, then cos half)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float32) / (dim / 2.0))
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float32), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid: int) -> np.ndarray:
    """MAE's 2-D sin-cos embedding of a ``grid`` x ``grid`` patch grid with a zero row in front
    for the class token: ``[1 + grid**2, dim]``."""
    ww, hh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    emb = np.concatenate([sincos_1d(dim // 2, ww), sincos_1d(dim // 2, hh)], axis=1)
    return np.concatenate([np.zeros([1, dim], dtype=emb.dtype), emb], axis=0)


class MplugOwl2VisionEmbeddings(nn.Module):
    """Patch embedding (no bias), class token, learned positions, pre-LayerNorm."""

    def __init__(self, config: MplugOwl2VisionConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embed = nn.Conv2d(
            3, config.hidden_size, config.patch_size, stride=config.patch_size, bias=False
        )
        patches = (config.image_size // config.patch_size) ** 2
        self.position_embedding = nn.Parameter(torch.zeros(1, patches + 1, config.hidden_size))
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], 1, -1).to(patches.dtype)
        tokens = torch.cat([cls, patches], dim=1)
        tokens = tokens + self.position_embedding[:, : tokens.shape[1]].to(patches.dtype)
        return self.pre_layernorm(tokens)


class MplugOwl2VisionAttention(nn.Module):
    """Self-attention with one fused ``query_key_value`` projection laid out per head
    (``[heads, 3, head_dim]``) and a ``dense`` output."""

    def __init__(self, config: MplugOwl2VisionConfig, attn_config) -> None:
        super().__init__()
        self.attn_config = attn_config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = float(config.attention_dropout)
        self.is_causal = False
        self.num_key_value_groups = 1
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        b, n, _ = hidden_states.shape
        qkv = self.query_key_value(hidden_states).reshape(b, n, self.num_heads, 3, self.head_dim)
        query, key, value = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        return self.dense(_attention(self, query, key, value))


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)`` (CLIP's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MplugOwl2VisionMLP(nn.Module):
    def __init__(self, config: MplugOwl2VisionConfig) -> None:
        super().__init__()
        self.activation_fn = QuickGELU()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class MplugOwl2VisionLayer(GradientCheckpointingLayer):
    """Pre-norm ViT block."""

    def __init__(self, config: MplugOwl2VisionConfig, attn_config) -> None:
        super().__init__()
        self.self_attn = MplugOwl2VisionAttention(config, attn_config)
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MplugOwl2VisionMLP(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class MplugOwl2VisionEncoder(nn.Module):
    def __init__(self, config: MplugOwl2VisionConfig, attn_config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MplugOwl2VisionLayer(config, attn_config) for _ in range(config.num_hidden_layers)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class MplugOwl2VisionModel(nn.Module):
    """The ViT: ``[B, 3, H, W]`` normalised pixels -> ``[B, 1 + patches, hidden]`` tokens after
    the post-LayerNorm (the class token included, as the abstractor reads them).

    Args:
        config: The ViT's configuration.
        attn_config: The model configuration whose ``_attn_implementation`` is used.
    """

    def __init__(self, config: MplugOwl2VisionConfig, attn_config) -> None:
        super().__init__()
        self.embeddings = MplugOwl2VisionEmbeddings(config)
        self.encoder = MplugOwl2VisionEncoder(config, attn_config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.encoder(self.embeddings(pixel_values)))


class MplugOwl2AbstractorMLP(nn.Module):
    """SwiGLU with a LayerNorm before the down projection (``w1``, ``w3``, ``ffn_ln``, ``w2``)."""

    def __init__(self, config: MplugOwl2AbstractorConfig) -> None:
        super().__init__()
        self.act = nn.SiLU()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_ln = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.ffn_ln(self.act(self.w1(x)) * self.w3(x)))


class MplugOwl2AbstractorMultiHeadAttention(nn.Module):
    """Queries attend to ``[queries; image tokens]``; sin-cos positions are added to the query
    and key inputs (not the values) and kept as the checkpoints' ``q_pos_embed`` /
    ``k_pos_embed`` buffers."""

    def __init__(self, config: MplugOwl2AbstractorConfig, attn_config) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"config.json: visual_abstractor.hidden_size={config.hidden_size} is not a "
                f"multiple of num_attention_heads={config.num_attention_heads}"
            )
        self.attn_config = attn_config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = float(config.attention_probs_dropout_prob)
        self.is_causal = False
        self.num_key_value_groups = 1
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.encoder_hidden_size, config.hidden_size)
        self.value = nn.Linear(config.encoder_hidden_size, config.hidden_size)
        self.register_buffer("q_pos_embed", self.query_positions(config))
        self.register_buffer("k_pos_embed", self.key_positions(config))

    @staticmethod
    def query_positions(config: MplugOwl2AbstractorConfig) -> torch.Tensor:
        positions = np.arange(config.num_learnable_queries, dtype=np.float32)
        return torch.from_numpy(sincos_1d(config.hidden_size, positions)).float()

    @staticmethod
    def key_positions(config: MplugOwl2AbstractorConfig) -> torch.Tensor:
        return torch.from_numpy(sincos_2d(config.hidden_size, config.grid_size)).float()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        dtype = queries.dtype
        q_pos = self.q_pos_embed.to(dtype)
        qk_pos = torch.cat([q_pos, self.k_pos_embed.to(dtype)], dim=0)
        if keys.shape[1] != qk_pos.shape[0]:
            raise ValueError(
                f"the abstractor sees {keys.shape[1] - q_pos.shape[0]} image tokens, its key "
                f"positions cover {qk_pos.shape[0] - q_pos.shape[0]} (visual_abstractor.grid_size "
                "must be image_size / patch_size of the visual_model)"
            )
        query = self._heads(self.query(queries + q_pos))
        key = self._heads(self.key(keys + qk_pos))
        value = self._heads(self.value(keys))
        return _attention(self, query, key, value)


class MplugOwl2AbstractorCrossOutput(nn.Module):
    def __init__(self, config: MplugOwl2AbstractorConfig) -> None:
        super().__init__()
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm2 = nn.LayerNorm(config.hidden_size)
        self.mlp = MplugOwl2AbstractorMLP(config)

    def forward(self, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        hidden = residual + self.out_proj(attended)
        return hidden + self.mlp(self.norm2(hidden))


class MplugOwl2AbstractorAttention(nn.Module):
    """LayerNorm on the queries (``norm1``) and the image tokens (``normk``); the residual
    stream continues from the NORMED queries, as in the original."""

    def __init__(self, config: MplugOwl2AbstractorConfig, attn_config) -> None:
        super().__init__()
        self.attention = MplugOwl2AbstractorMultiHeadAttention(config, attn_config)
        self.output = MplugOwl2AbstractorCrossOutput(config)
        self.norm1 = nn.LayerNorm(config.hidden_size)
        self.normk = nn.LayerNorm(config.hidden_size)

    def forward(self, queries: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        queries = self.norm1(queries)
        keys = torch.cat([queries, self.normk(image_tokens)], dim=1)
        return self.output(self.attention(queries, keys), queries)


class MplugOwl2AbstractorLayer(GradientCheckpointingLayer):
    def __init__(self, config: MplugOwl2AbstractorConfig, attn_config) -> None:
        super().__init__()
        self.crossattention = MplugOwl2AbstractorAttention(config, attn_config)

    def forward(self, queries: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.crossattention(queries, image_tokens)


class MplugOwl2AbstractorEncoder(nn.Module):
    def __init__(self, config: MplugOwl2AbstractorConfig, attn_config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MplugOwl2AbstractorLayer(config, attn_config) for _ in range(config.num_hidden_layers)
        )

    def forward(self, queries: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            queries = layer(queries, image_tokens)
        return queries


class MplugOwl2VisualAbstractor(nn.Module):
    """``[B, 1 + patches, vision hidden]`` -> ``[B, queries + 1, language hidden]``: the
    projected queries (``visual_fc``) and the end-of-image token (``vit_eos``).

    Args:
        config: The abstractor's configuration.
        language_hidden_size: Width of the language model.
        attn_config: The model configuration whose ``_attn_implementation`` is used.
    """

    def __init__(
        self, config: MplugOwl2AbstractorConfig, language_hidden_size: int, attn_config
    ) -> None:
        super().__init__()
        self.encoder = MplugOwl2AbstractorEncoder(config, attn_config)
        self.visual_fc = nn.Linear(config.hidden_size, language_hidden_size)
        self.query_embeds = nn.Parameter(
            torch.zeros(1, config.num_learnable_queries, config.hidden_size)
        )
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_hidden_size))

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        batch = image_tokens.shape[0]
        queries = self.query_embeds.expand(batch, -1, -1).to(image_tokens.dtype)
        out = self.visual_fc(self.encoder(queries, image_tokens))
        return torch.cat([out, self.vit_eos.expand(batch, -1, -1).to(out.dtype)], dim=1)
