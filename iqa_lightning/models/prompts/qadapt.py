"""Instruction-adaptive visual prompting (Q-Adapt, arXiv 2504.01655, repo yeppp27/Q-Adapt).

Two parts adapt the frozen vision features ``[B, N, D]`` to each instruction, before the projector:

- V-T Generator: an InstructBLIP Q-Former (arXiv 2305.06500; ``transformers``'
  ``InstructBlipQFormerModel``) whose learnable queries attend to the instruction (self-attention
  over queries and text) and to the vision features (cross-attention every 2nd layer). The vision
  features reach it through ``Linear(D -> 1408)`` and InstructBLIP's ``ln_vision`` LayerNorm.
- T-V Prompter: every visual token (the query, one head) attends to the Q-Former's query outputs
  mapped back to width ``D`` (keys and values); a scalar gate per token,
  ``alpha = sigmoid(MLP(LayerNorm([x; attn])))``, mixes them, and
  ``x + scale * LayerNorm((1 - alpha) x + alpha attn)`` goes on to the projector.

Reference (yeppp27/Q-Adapt at 424a7c6): ``bunny/model/vlm_atten.py:21-68`` (the T-V Prompter),
``bunny/model/bunny_arch_qformer.py:38-57`` (modules, checkpoint), ``:135-171`` (Q-Former),
``:263-344`` (the forward) and ``:211`` (``feat + 0.1 * prompter``); which parameters train:
``bunny/train/train_addqformer_stage2.py:424-479`` with ``--bert_type qformer_pretrain_freeze_part``
(``bunny/script/train/finetune_single_stage2.sh:44``). docs/reproduction.md lists every knob.

Instructions. The reference conditions on every human turn of a conversation
(``bunny/util/data_utils_prompt.py:92-102`` collects them, ``<image>`` and newlines removed): each
turn is its own Q-Former and T-V Prompter pass over the image (``bunny_arch_qformer.py:271-336``)
and the prompts of an image's turns are averaged before the add-back (its multi-image path,
``:241-256``; the single-image path, ``:204-212``, stacks one prompt per turn and adds them to the
features as they are, which works only with one turn per image). With
``condition_on="first_human_turn"`` only the first turn conditions. A single instruction (a
score question) is the same under both.

The prompter reaches the features through :meth:`Backbone.feature_hook`, so no family's forward
is copied; its parameters form the ``prompter`` group. Q-Former weights that the recipe keeps
frozen (self-attention, feed-forward and embeddings of a checkpoint-loaded Q-Former) are held as
buffers, not parameters: they are constants of the method, in no parameter group, never trained,
and never written to a run's checkpoints (they come back from ``qformer_pretrained``).

Token order. Qwen2.5-VL hands its merger the patches of each image in window order (grouped by
attention window), not in raster order, and restores raster order only after the merger. Neither
part depends on that order: the Q-Former's queries cross-attend to the vision features as keys
and values with no position embedding (attention is invariant to a permutation of its keys), and
the T-V Prompter treats each visual token on its own (its attention over the queries, the gate and
the residual are per token, so permuting the tokens permutes the outputs). A test checks both on
every family. ``drop_first_token=true`` (the reference's literal behaviour) breaks that on
families without a class token, where the first token is a patch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

QFORMER_TRAINABLE = ("cross_attention", "all", "none")
CONDITION_ON = ("all_human_turns", "first_human_turn")


class InstructBlipParts(NamedTuple):
    """What the V-T Generator takes from an InstructBLIP checkpoint."""

    qformer: nn.Module
    query_tokens: torch.Tensor
    tokenizer: object
    ln_vision: dict[str, torch.Tensor]


def load_instructblip_qformer(pretrained: str) -> InstructBlipParts:
    """Q-Former, query tokens, Q-Former tokenizer and ``ln_vision`` of an InstructBLIP checkpoint.

    Reads only the ``qformer.*``, ``query_tokens`` and ``vision_model.post_layernorm.*`` tensors
    from the safetensors shards, so the vision and language weights are never loaded. HF's
    conversion of the LAVIS checkpoints renames LAVIS's ``ln_vision`` (the LayerNorm between the
    ViT and the Q-Former, which Q-Adapt loads: bunny_arch_qformer.py:56) to
    ``vision_model.post_layernorm``.
    """
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
    ln_prefix = "vision_model.post_layernorm."
    tensors = {}
    for shard in shards:
        with safe_open(str(folder / shard), framework="pt") as f:
            for key in f.keys():
                if key.startswith(("qformer.", ln_prefix)) or key == "query_tokens":
                    tensors[key] = f.get_tensor(key)
    for needed in ("query_tokens", f"{ln_prefix}weight", f"{ln_prefix}bias"):
        if needed not in tensors:
            raise KeyError(f"prompt.qformer_pretrained={pretrained!r}: no {needed} tensor")
    qformer = InstructBlipQFormerModel(config.qformer_config)
    state = {k[len("qformer.") :]: v for k, v in tensors.items() if k.startswith("qformer.")}
    qformer.load_state_dict(state)
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="qformer_tokenizer")
    ln_vision = {k[len(ln_prefix) :]: v for k, v in tensors.items() if k.startswith(ln_prefix)}
    return InstructBlipParts(qformer, tensors["query_tokens"], tokenizer, ln_vision)


def freeze_as_buffers(module: nn.Module, keep: Callable[[str], bool]) -> list[str]:
    """Turn every parameter of ``module`` whose name ``keep`` rejects into a buffer of that name.

    The module computes as before (``nn.Linear`` and friends look their weights up by name) and
    gradients still flow through it to its inputs, but the frozen tensors are no parameters: no
    optimiser, parameter group or phase can train them. They stay in ``state_dict``.

    Returns:
        The names made buffers.
    """
    frozen = []
    for prefix, sub in module.named_modules():
        for name, param in list(sub._parameters.items()):
            full = f"{prefix}.{name}" if prefix else name
            if param is None or keep(full):
                continue
            del sub._parameters[name]
            sub.register_buffer(name, param.detach().requires_grad_(False))
            frozen.append(full)
    return frozen


def _qformer_keeps(trainable: str) -> Callable[[str], bool]:
    if trainable == "all":
        return lambda name: True
    if trainable == "none":
        return lambda name: False
    # train_addqformer_stage2.py:470-473: bert_type "..._freeze_part" trains the Q-Former
    # parameters named "crossattention" (attention and output dense + LayerNorm) and no other.
    return lambda name: "crossattention" in name.split(".")


class QAdaptPrompt(nn.Module):
    """V-T Generator + T-V Prompter on the vision features of a frozen backbone.

    Defaults are the reference's (file:line in docs/reproduction.md); ``prompt=qadapt_tiny``
    gives a small random one for tests and the demo.

    Args:
        backbone: The backbone (gives the vision feature width, whether its features start with
            a class token and, for a random Q-Former without ``qformer_tokenizer``, the tokenizer).
        num_queries: Query tokens of the V-T Generator (random Q-Former; a checkpoint brings its
            own).
        hidden_size: Q-Former width (random Q-Former).
        num_layers: Q-Former layers (random Q-Former).
        num_heads: Q-Former attention heads (random Q-Former).
        intermediate_size: Q-Former feed-forward width; None: ``4 * hidden_size``.
        cross_attention_every: A Q-Former layer attends to the vision features every this many
            (layers 0, n, 2n, ...).
        encoder_width: Width the vision features are mapped to for the Q-Former (the Linear
            ``D -> encoder_width`` and ``ln_vision``); a checkpoint brings its own.
        drop_first_token: Feed the Q-Former the vision tokens after the first. None: when the
            backbone's features start with a class token (LLaVA with
            ``vision_feature_select_strategy: full``). The reference drops the first token always.
        prompter_heads: Heads of the T-V Prompter's attention.
        gate_hidden: Hidden width of the gate MLP.
        gate_dropout: Dropout after the gate MLP's activation.
        scale: Weight of the prompter's output added back to the vision features.
        max_instruction_tokens: Instructions are truncated to this many Q-Former tokens.
        truncation_side: Which end of a long instruction is cut (the reference: ``left``).
        qformer_pretrained: InstructBLIP checkpoint folder (HF layout) to load the Q-Former,
            its query tokens, tokenizer and ``ln_vision`` from, or None for a random Q-Former.
        qformer_tokenizer: Tokenizer folder or hub id for a random Q-Former (e.g. a
            ``bert-base-uncased`` copy); None: the backbone's tokenizer.
        qformer_trainable: Q-Former parameters that train: ``cross_attention`` (the reference),
            ``all`` or ``none``; None: ``cross_attention`` for a checkpoint, ``all`` for a random
            Q-Former.
        condition_on: Which human turns of a conversation condition the prompter:
            ``all_human_turns`` (the reference: one pass per turn, the prompts averaged) or
            ``first_human_turn``.
    """

    group = "prompter"

    def __init__(
        self,
        backbone,
        num_queries: int = 32,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate_size: int | None = None,
        cross_attention_every: int = 2,
        encoder_width: int = 1408,
        drop_first_token: bool | None = None,
        prompter_heads: int = 1,
        gate_hidden: int = 2048,
        gate_dropout: float = 0.1,
        scale: float = 0.1,
        max_instruction_tokens: int = 256,
        truncation_side: str = "left",
        qformer_pretrained: str | None = None,
        qformer_tokenizer: str | None = None,
        qformer_trainable: str | None = None,
        condition_on: str = "all_human_turns",
    ) -> None:
        super().__init__()
        if condition_on not in CONDITION_ON:
            raise ValueError(
                f"prompt.condition_on={condition_on!r} must be one of {list(CONDITION_ON)}"
            )
        self.condition_on = condition_on
        if qformer_trainable is None:
            qformer_trainable = "cross_attention" if qformer_pretrained else "all"
        if qformer_trainable not in QFORMER_TRAINABLE:
            raise ValueError(
                f"prompt.qformer_trainable={qformer_trainable!r} must be one of "
                f"{list(QFORMER_TRAINABLE)}"
            )
        if truncation_side not in ("left", "right"):
            raise ValueError(f"prompt.truncation_side={truncation_side!r}: left or right")
        vision_dim = int(backbone.vision_feature_dim)
        if vision_dim % prompter_heads:
            raise ValueError(
                f"prompt.prompter_heads={prompter_heads} must divide the vision feature width "
                f"{vision_dim}"
            )
        self.max_instruction_tokens = int(max_instruction_tokens)
        self.qformer, ln_vision = self._build_qformer(
            backbone, num_queries, hidden_size, num_layers, num_heads, intermediate_size,
            cross_attention_every, encoder_width, qformer_pretrained, qformer_tokenizer,
        )  # fmt: skip
        self.tokenizer.padding_side = "right"  # the Q-Former has absolute positions
        self.tokenizer.truncation_side = truncation_side
        config = self.qformer.config
        if drop_first_token is None:
            vision_config = getattr(getattr(backbone, "model", None), "config", None)
            select = getattr(vision_config, "vision_feature_select_strategy", None)
            # A family may say itself whether its features open with a class token (SigLIP's
            # Bunny reads every patch with strategy "full" and has none).
            drop_first_token = getattr(backbone, "features_have_class_token", select == "full")
        self.drop_first_token = bool(drop_first_token)

        # V-T Generator around the Q-Former (bunny_arch_qformer.py:41, 43, 46).
        self.feature_in = nn.Linear(vision_dim, config.encoder_hidden_size)
        self.ln_vision = nn.LayerNorm(config.encoder_hidden_size)
        if ln_vision is not None:
            self.ln_vision.load_state_dict(ln_vision)
        self.query_out = nn.Linear(config.hidden_size, vision_dim)
        # T-V Prompter (vlm_atten.py:26-37; built with nhead=1, dim_feedforward=2048 at
        # bunny_arch_qformer.py:47; its unused dropout1/dropout2 hold no parameters).
        self.cross_attn = nn.MultiheadAttention(vision_dim, prompter_heads, batch_first=True)
        self.gate = nn.Sequential(
            nn.LayerNorm(2 * vision_dim),
            nn.Linear(2 * vision_dim, gate_hidden),
            nn.ReLU(),
            nn.Dropout(gate_dropout),
            nn.Linear(gate_hidden, 1),
        )
        self.norm = nn.LayerNorm(vision_dim)
        self.register_buffer("scale", torch.tensor(float(scale)), False)
        self.frozen = freeze_as_buffers(self.qformer, _qformer_keeps(qformer_trainable))
        self._instruction: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build_qformer(
        self, backbone, num_queries, hidden_size, num_layers, num_heads, intermediate_size,
        cross_attention_every, encoder_width, pretrained, tokenizer_name,
    ):  # fmt: skip
        from transformers import AutoTokenizer, InstructBlipQFormerConfig, InstructBlipQFormerModel

        if pretrained:
            parts = load_instructblip_qformer(pretrained)
            self.tokenizer = parts.tokenizer
            self.query_tokens = nn.Parameter(parts.query_tokens.float().clone())
            return parts.qformer, parts.ln_vision
        if hidden_size % num_heads:
            raise ValueError(
                f"prompt.hidden_size={hidden_size} must be a multiple of "
                f"prompt.num_heads={num_heads}"
            )
        if tokenizer_name:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
        else:  # a copy: the sides set for the Q-Former must not change the backbone's
            self.tokenizer = copy.deepcopy(backbone.tokenizer)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the Q-Former's tokenizer has no pad token")
        config = InstructBlipQFormerConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size or 4 * hidden_size,
            cross_attention_frequency=cross_attention_every,
            encoder_hidden_size=encoder_width,
            pad_token_id=self.tokenizer.pad_token_id,
            max_position_embeddings=max(512, self.max_instruction_tokens),
        )
        # Query tokens start at N(0, 0.02) (bunny_arch_qformer.py:151-154).
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, hidden_size) * 0.02)
        return InstructBlipQFormerModel(config), None

    @staticmethod
    def clean(instruction: str) -> str:
        """The instruction as the Q-Former reads it: no image placeholder, no newlines
        (bunny/util/data_utils_prompt.py:94)."""
        return instruction.replace("<image>", "").replace("\n", "")

    def instruction_texts(
        self, instructions: Sequence[str | Sequence[str]]
    ) -> tuple[list[str], list[int]]:
        """The cleaned texts the Q-Former reads and, for each, the index of its image.

        Args:
            instructions: One per image: a string, or the human turns of its conversation in
                order (``condition_on`` picks which of them condition).
        """
        texts: list[str] = []
        owner: list[int] = []
        for index, item in enumerate(instructions):
            turns = [item] if isinstance(item, str) else list(item)
            if not turns:
                raise ValueError(f"image {index} of the batch has no instruction (no human turn)")
            if self.condition_on == "first_human_turn":
                turns = turns[:1]
            texts.extend(self.clean(text) for text in turns)
            owner.extend([index] * len(turns))
        return texts, owner

    @contextmanager
    def conditioned(self, instructions: Sequence[str | Sequence[str]]) -> Iterator[None]:
        """Within the block, :meth:`adapt` uses these instructions (one per image: a string or
        the human turns of its conversation)."""
        texts, owner = self.instruction_texts(instructions)
        enc = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_instruction_tokens,
            add_special_tokens=True,
        )
        device = self.query_tokens.device
        self._instruction = (
            enc.input_ids.to(device),
            enc.attention_mask.to(device),
            torch.tensor(owner, dtype=torch.long, device=device),
        )
        try:
            yield
        finally:
            self._instruction = None

    def generate_queries(self, features: torch.Tensor) -> torch.Tensor:
        """V-T Generator: ``[B, Q, H]`` instruction-conditioned queries over ``[B, N, D]``."""
        if self._instruction is None:
            raise RuntimeError("QAdaptPrompt.adapt runs inside QAdaptPrompt.conditioned(...)")
        ids, mask = self._instruction[:2]
        batch = features.shape[0]
        if ids.shape[0] != batch:
            raise ValueError(f"{ids.shape[0]} instructions for {batch} images")
        if self.drop_first_token:  # bunny_arch_qformer.py:299-300
            features = features[:, 1:]
        vision = self.ln_vision(self.feature_in(features))  # :298, :306-307
        queries = self.query_tokens.expand(batch, -1, -1)
        out = self.qformer(
            input_ids=ids,
            attention_mask=torch.cat([mask.new_ones(batch, queries.shape[1]), mask], dim=1),
            query_embeds=queries,
            encoder_hidden_states=vision,
            encoder_attention_mask=features.new_ones(features.shape[:2], dtype=torch.long),
        )
        return out.last_hidden_state[:, : queries.shape[1]]  # :311-319

    def prompt_tokens(
        self, features: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T-V Prompter: the prompt ``[B, N, D]`` and the gate ``[B, N, 1]`` of each token.

        Args:
            features: Vision features ``[B, N, D]`` (the attention's queries).
            queries: The V-T Generator's outputs ``[B, Q, H]``.
        """
        memory = self.query_out(queries)  # bunny_arch_qformer.py:341
        attended, _ = self.cross_attn(features, memory, memory, need_weights=False)
        # vlm_atten.py:62-67
        gate = torch.sigmoid(self.gate(torch.cat([features, attended], dim=-1)))
        return self.norm((1 - gate) * features + gate * attended), gate

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this prompter trains (the ``prompter`` group), by name relative to
        it; the Q-Former weights the recipe keeps frozen are buffers and not among them."""
        return dict(self.named_parameters())

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        """Adapt ``[B, N, D]`` vision features to the current instructions (an image with
        several: the mean of their prompts, bunny_arch_qformer.py:250-256)."""
        if self._instruction is None:
            raise RuntimeError("QAdaptPrompt.adapt runs inside QAdaptPrompt.conditioned(...)")
        owner = self._instruction[2]
        batch = features.shape[0]
        images = int(owner[-1]) + 1
        if images != batch:
            raise ValueError(f"instructions for {images} images, {batch} images")
        dtype = features.dtype
        x = features.to(self.query_tokens.dtype)
        if owner.numel() == batch:  # one instruction per image
            prompt, _ = self.prompt_tokens(x, self.generate_queries(x))
        else:
            repeated = x.index_select(0, owner)
            each, _ = self.prompt_tokens(repeated, self.generate_queries(repeated))
            counts = torch.bincount(owner, minlength=batch).to(each.dtype)
            prompt = x.new_zeros(x.shape).index_add(0, owner, each) / counts.view(-1, 1, 1)
        return (x + self.scale * prompt).to(dtype)  # bunny_arch_qformer.py:211
