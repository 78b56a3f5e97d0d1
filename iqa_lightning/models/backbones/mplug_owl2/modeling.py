"""mPLUG-Owl2 as a ``transformers`` model on current releases: the checkpoints' layout and
parameter names, no remote code.

mPLUG-Owl2 (https://arxiv.org/abs/2311.04257). The prompt ids hold :data:`IMAGE_TOKEN_INDEX`
(-200) where an image goes; the model replaces each with the abstractor's tokens of one image
(queries + end-of-image token) and marks those positions as visual in the modality mask that the
decoder layers route by. Unlike the original, the attention mask of a left-padded batch keeps
its padding where it was (the original prepends the extra positions to the mask, which only
matters for padded batches), and positions skip the padding.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

from iqa_lightning.models.backbones.mplug_owl2.configuration import MplugOwl2Config
from iqa_lightning.models.backbones.mplug_owl2.decoder import VISUAL, MplugOwl2DecoderLayer
from iqa_lightning.models.backbones.mplug_owl2.vision import (
    MplugOwl2AbstractorMultiHeadAttention,
    MplugOwl2VisionEmbeddings,
    MplugOwl2VisionModel,
    MplugOwl2VisualAbstractor,
)

#: The id that stands for one image in mPLUG-Owl2's prompt ids (outside the vocabulary).
IMAGE_TOKEN_INDEX = -200
#: The text that becomes :data:`IMAGE_TOKEN_INDEX` when a prompt is tokenised.
IMAGE_PLACEHOLDER = "<|image|>"


class MplugOwl2PreTrainedModel(PreTrainedModel):
    config_class = MplugOwl2Config
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "MplugOwl2DecoderLayer",
        "MplugOwl2VisionLayer",
        "MplugOwl2AbstractorLayer",
    ]
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, MplugOwl2VisionEmbeddings):
            init.normal_(module.cls_token, std=std)
            init.normal_(module.position_embedding, std=std)
        elif isinstance(module, MplugOwl2VisualAbstractor):
            init.normal_(module.query_embeds, std=std)
            init.normal_(module.vit_eos, std=std)
        elif isinstance(module, MplugOwl2AbstractorMultiHeadAttention):
            config = self.config.abstractor_config
            init.copy_(module.q_pos_embed, module.query_positions(config))
            init.copy_(module.k_pos_embed, module.key_positions(config))


class MplugOwl2Model(MplugOwl2PreTrainedModel):
    """The language model (``embed_tokens``, ``layers``, ``norm``) with ``vision_model`` and
    ``visual_abstractor`` beside it, as the checkpoints name them."""

    def __init__(self, config: MplugOwl2Config) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            MplugOwl2DecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.vision_model = MplugOwl2VisionModel(config.vision_config, config)
        self.visual_abstractor = MplugOwl2VisualAbstractor(
            config.abstractor_config, config.hidden_size, config
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` normalised pixels -> ``[N, queries + 1, hidden]`` image tokens.

        The abstractor is called with the ViT's tokens as its first positional input (the
        feature hook point of the backbone adapter).
        """
        return self.visual_abstractor(self.vision_model(pixel_values))

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` normalised frames -> ``[B, F * (queries + 1), hidden]``: each
        video's frame tokens in frame order, for its one placeholder (Q-Align's video scorer:
        one ``<|image|>`` per video, the frames' features flattened in its place)."""
        batch, frames = pixel_values.shape[:2]
        tokens = self.encode_images(pixel_values.flatten(0, 1))
        return tokens.unflatten(0, (batch, frames)).flatten(1, 2)

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_tokens: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ):
        """Replace each :data:`IMAGE_TOKEN_INDEX` by one image's tokens.

        Args:
            input_ids: ``[B, L]``; every row holds the same number of placeholders.
            attention_mask: ``[B, L]``.
            image_tokens: ``[images, T, D]``, in row-major order of the placeholders.
            labels: ``[B, L]`` or None; image positions get -100.

        Returns:
            ``(inputs_embeds [B, L', D], modality [B, L'], attention_mask [B, L'], labels)``.
        """
        is_image = input_ids == IMAGE_TOKEN_INDEX
        counts = is_image.sum(-1)
        found = int(counts.sum())
        if found == 0:
            embeds = self.embed_tokens(input_ids)
            return embeds, torch.zeros_like(input_ids), attention_mask, labels
        if image_tokens is None or image_tokens.shape[0] != found:
            given = 0 if image_tokens is None else image_tokens.shape[0]
            raise ValueError(
                f"the prompt ids hold {found} image placeholders, {given} images given"
            )
        if bool((counts != counts[0]).any()):
            raise ValueError(
                f"every prompt must hold the same number of images; the rows hold {counts.tolist()}"
            )
        batch, length = input_ids.shape
        span = image_tokens.shape[1]
        width = torch.where(is_image, span, 1)
        start = width.cumsum(-1) - width
        new_length = length + int(counts[0]) * (span - 1)
        device = input_ids.device

        text_rows, text_cols = torch.nonzero(~is_image, as_tuple=True)
        image_rows, image_cols = torch.nonzero(is_image, as_tuple=True)
        text_at = start[text_rows, text_cols]
        image_at = start[image_rows, image_cols][:, None] + torch.arange(span, device=device)
        image_rows = image_rows[:, None].expand_as(image_at)

        text = self.embed_tokens(input_ids[text_rows, text_cols])
        embeds = text.new_zeros(batch, new_length, text.shape[-1])
        embeds = embeds.index_put((text_rows, text_at), text)
        embeds = embeds.index_put((image_rows, image_at), image_tokens.to(text.dtype))
        modality = torch.zeros(batch, new_length, dtype=torch.long, device=device)
        modality[image_rows, image_at] = VISUAL
        mask = attention_mask.new_zeros(batch, new_length)
        mask[text_rows, text_at] = attention_mask[text_rows, text_cols]
        mask[image_rows, image_at] = attention_mask[image_rows[:, 0], image_cols][:, None]
        if labels is not None:
            new_labels = labels.new_full((batch, new_length), -100)
            new_labels[text_rows, text_at] = labels[text_rows, text_cols]
            labels = new_labels
        return embeds, modality, mask, labels

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        labels: torch.Tensor | None = None,
        **kwargs,
    ):
        """Splice the images in, then run the decoder.

        Returns:
            ``(last_hidden_state, hidden_states or None, cache, labels)``; the hidden states are
            the embeddings and each layer's output, the last one after the final norm.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if pixel_values is not None and pixel_values.ndim == 5:  # [B, frames, 3, H, W]: videos
            image_tokens = self.encode_frames(pixel_values)
        else:
            image_tokens = None if pixel_values is None else self.encode_images(pixel_values)
        embeds, modality, mask, labels = self.splice(
            input_ids, attention_mask, image_tokens, labels
        )
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if mask.shape[1] < past + embeds.shape[1]:
            # Generation steps extend the mask of the prompt ids, not of the spliced sequence;
            # with left padding, the missing positions are ones at the end.
            missing = past + embeds.shape[1] - mask.shape[1]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], missing)], dim=1)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1] :]
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=embeds,
            attention_mask=mask,
            cache=cache,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(embeds, position_ids=position_ids)
        hidden = embeds
        states = [hidden] if output_hidden_states else None
        for layer in self.layers:
            hidden = layer(
                hidden,
                modality,
                position_embeddings,
                attention_mask=causal_mask,
                cache=cache,
            )
            if states is not None:
                states.append(hidden)
        hidden = self.norm(hidden)
        if states is not None:
            states[-1] = hidden
        return hidden, None if states is None else tuple(states), cache, labels


class MplugOwl2ForCausalLM(MplugOwl2PreTrainedModel, GenerationMixin):
    """mPLUG-Owl2 with its LM head (``MPLUGOwl2LlamaForCausalLM`` checkpoints)."""

    def __init__(self, config: MplugOwl2Config) -> None:
        super().__init__(config)
        self.model = MplugOwl2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache=None,
        past_key_values=None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Next-token logits (and an fp32 loss where ``labels`` are given, shifted, -100
        ignored, image positions never labelled).

        Args:
            input_ids: ``[B, L]`` prompt ids with :data:`IMAGE_TOKEN_INDEX` per image.
            attention_mask: ``[B, L]``.
            pixel_values: ``[images, 3, H, W]`` normalised pixels, or ``[B, frames, 3, H, W]``
                (one video per prompt, its frames at its one placeholder).
            labels: ``[B, L]`` target ids, -100 where not trained.
            cache: Key / value cache (generation).
            past_key_values: The same, under its older name.
            use_cache: Build and return a cache.
            output_hidden_states: Return each layer's hidden states.
            logits_to_keep: Compute the logits of the last this many positions only (0: all).
        """
        cache = cache if cache is not None else past_key_values
        hidden, states, cache, labels = self.model(
            input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            cache=cache,
            use_cache=bool(use_cache),
            output_hidden_states=bool(output_hidden_states),
            labels=labels,
        )
        kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        logits = self.lm_head(kept)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].float()
            loss = nn.functional.cross_entropy(
                shifted.reshape(-1, shifted.shape[-1]),
                labels[:, 1:].reshape(-1).to(shifted.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=cache if use_cache else None, hidden_states=states
        )
