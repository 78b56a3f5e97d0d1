"""Instruction-adaptive visual prompting (Q-Adapt, arXiv 2504.01655, repo yeppp27/Q-Adapt).

Two parts adapt the frozen vision features to each instruction, before the projector:

- V-T Generator: learnable query tokens attend to the vision features and, jointly, to the
  instruction text, in an InstructBLIP-style Q-Former (``transformers``'
  ``InstructBlipQFormerModel``; arXiv 2305.06500). It is built randomly initialised at a
  configurable size, or loaded from an InstructBLIP checkpoint (with its own tokenizer).
- T-V Prompter: every visual token cross-attends to the generated queries; a learned gate mixes
  the attended features with the originals, and the result is added back to the vision features
  with a small scale.

The prompter reaches the features through :meth:`Backbone.feature_hook`, so no family's forward
is copied; its parameters form the ``prompter`` group.

Token order. Qwen2.5-VL hands its merger the patches of each image in window order (grouped by
attention window), not in raster order, and restores raster order only after the merger. Neither
part depends on that order: the V-T Generator's queries cross-attend to the vision features as
keys and values with no position embedding (attention is invariant to a permutation of its keys),
and the T-V Prompter treats each visual token on its own (its attention over the queries, the
gate and the residual are per token, so permuting the tokens permutes the outputs). A test checks
both on every family.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


def load_instructblip_qformer(pretrained: str):
    """Q-Former, query tokens and Q-Former tokenizer of an InstructBLIP checkpoint folder.

    Reads only the ``qformer.*`` and ``query_tokens`` tensors from the safetensors shards, so the
    vision and language weights of the checkpoint are never loaded.
    """
    import json

    from safetensors import safe_open
    from transformers import AutoTokenizer, InstructBlipConfig, InstructBlipQFormerModel

    folder = Path(pretrained).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"prompt.qformer_pretrained={pretrained!r}: no such folder")
    config = InstructBlipConfig.from_pretrained(folder)
    index = folder / "model.safetensors.index.json"
    shards = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    tensors = {}
    for shard in shards:
        with safe_open(str(folder / shard), framework="pt") as f:
            for key in f.keys():
                if key.startswith("qformer.") or key == "query_tokens":
                    tensors[key] = f.get_tensor(key)
    if "query_tokens" not in tensors:
        raise KeyError(f"prompt.qformer_pretrained={pretrained!r}: no query_tokens tensor")
    qformer = InstructBlipQFormerModel(config.qformer_config)
    state = {k[len("qformer.") :]: v for k, v in tensors.items() if k.startswith("qformer.")}
    qformer.load_state_dict(state)
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="qformer_tokenizer")
    return qformer, tensors["query_tokens"], tokenizer


class QAdaptPrompt(nn.Module):
    """V-T Generator + T-V Prompter on the vision features of a frozen backbone.

    Args:
        backbone: The backbone (gives the vision feature width and, for a randomly initialised
            Q-Former, the tokenizer for instructions).
        num_queries: Query tokens of the V-T Generator.
        hidden_size: Q-Former width.
        num_layers: Q-Former layers.
        num_heads: Attention heads of the Q-Former and of the prompter's cross-attention.
        cross_attention_every: A Q-Former layer attends to the vision features every this many.
        scale: Weight of the adapted features added back to the originals.
        max_instruction_tokens: Instructions are truncated to this many tokens.
        qformer_pretrained: InstructBLIP checkpoint folder to load the Q-Former from, or None.
    """

    group = "prompter"

    def __init__(
        self,
        backbone,
        num_queries: int = 32,
        hidden_size: int = 768,
        num_layers: int = 2,
        num_heads: int = 8,
        cross_attention_every: int = 1,
        scale: float = 0.1,
        max_instruction_tokens: int = 128,
        qformer_pretrained: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

        vision_dim = backbone.vision_feature_dim
        if qformer_pretrained:
            self.qformer, query_tokens, self.tokenizer = load_instructblip_qformer(
                qformer_pretrained
            )
            self.query_tokens = nn.Parameter(query_tokens.float().clone())
            hidden_size = self.qformer.config.hidden_size
            self.feature_in = nn.Linear(vision_dim, self.qformer.config.encoder_hidden_size)
        else:
            if hidden_size % num_heads:
                raise ValueError(
                    f"prompt.hidden_size={hidden_size} must be a multiple of "
                    f"prompt.num_heads={num_heads}"
                )
            self.tokenizer = backbone.tokenizer
            config = InstructBlipQFormerConfig(
                vocab_size=len(backbone.tokenizer),
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=4 * hidden_size,
                cross_attention_frequency=cross_attention_every,
                encoder_hidden_size=vision_dim,
                pad_token_id=backbone.tokenizer.pad_token_id,
                max_position_embeddings=max(512, max_instruction_tokens),
            )
            self.qformer = InstructBlipQFormerModel(config)
            self.query_tokens = nn.Parameter(torch.randn(1, num_queries, hidden_size) * 0.02)
            self.feature_in = nn.Identity()
        self.max_instruction_tokens = int(max_instruction_tokens)
        heads = num_heads if vision_dim % num_heads == 0 else 1
        self.norm = nn.LayerNorm(vision_dim)
        self.cross_attn = nn.MultiheadAttention(
            vision_dim, heads, kdim=hidden_size, vdim=hidden_size, batch_first=True
        )
        self.gate = nn.Linear(2 * vision_dim, vision_dim)
        self.register_buffer("scale", torch.tensor(float(scale)), False)
        self._instruction: tuple[torch.Tensor, torch.Tensor] | None = None

    @contextmanager
    def conditioned(self, instructions: Sequence[str]) -> Iterator[None]:
        """Within the block, :meth:`adapt` uses these instructions (one per image)."""
        self.tokenizer.padding_side = "right"  # the Q-Former has absolute positions
        enc = self.tokenizer(
            list(instructions),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_instruction_tokens,
            add_special_tokens=True,
        )
        device = self.query_tokens.device
        self._instruction = (enc.input_ids.to(device), enc.attention_mask.to(device))
        try:
            yield
        finally:
            self._instruction = None

    def generate_queries(self, features: torch.Tensor) -> torch.Tensor:
        """V-T Generator: ``[B, Q, H]`` instruction-conditioned queries over ``[B, N, D]``."""
        if self._instruction is None:
            raise RuntimeError("QAdaptPrompt.adapt runs inside QAdaptPrompt.conditioned(...)")
        ids, mask = self._instruction
        batch = features.shape[0]
        if ids.shape[0] != batch:
            raise ValueError(f"{ids.shape[0]} instructions for {batch} images")
        queries = self.query_tokens.expand(batch, -1, -1)
        out = self.qformer(
            input_ids=ids,
            attention_mask=torch.cat([mask.new_ones(batch, queries.shape[1]), mask], dim=1),
            query_embeds=queries,
            encoder_hidden_states=self.feature_in(features),
            encoder_attention_mask=features.new_ones(features.shape[:2], dtype=torch.long),
        )
        return out.last_hidden_state[:, : queries.shape[1]]

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        """T-V Prompter: adapt ``[B, N, D]`` vision features to the current instructions."""
        dtype = features.dtype
        x = features.float()
        queries = self.generate_queries(x)
        attended, _ = self.cross_attn(self.norm(x), queries, queries, need_weights=False)
        gate = torch.sigmoid(self.gate(torch.cat([x, attended], dim=-1)))
        mixed = gate * attended + (1 - gate) * x
        return (x + self.scale * mixed).to(dtype)
