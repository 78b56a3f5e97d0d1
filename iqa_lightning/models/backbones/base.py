"""The frozen LMM behind one small adapter per model family.

An adapter hides what differs between families: the chat template and image placeholder tokens,
how [0, 1] pixels become the model's ``pixel_values`` (normalised with the backbone's own mean and
std, patchified where the family needs it, all differentiable so a pixel prompt gets gradients),
and where the answer position is. Prompts and score heads only ever talk to this interface.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from iqa_lightning.models.backbones.attention import AttentionReadout
from iqa_lightning.models.backbones.blocks import checkpointing_blocks, set_gradient_checkpointing
from iqa_lightning.models.backbones.loading import DTYPES, load_pretrained, resolve_dtype
from iqa_lightning.models.backbones.scoring_file import ExportedScoring, read_scoring
from iqa_lightning.models.backbones.text import ChatTemplate, PromptEncoding
from iqa_lightning.preprocessing import IMAGENET_MEAN, IMAGENET_STD

# ``imagenet``: ImageNet's statistics, what the visual-prompt reference normalises mPLUG-Owl2's
# input with (mplug2-vp-for-nriqa src/transforms.py:6-7) although the model was trained with
# CLIP's.
NORMALIZATIONS = ("backbone", "imagenet")

__all__ = [
    "DTYPES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "Backbone",
    "ChatTemplate",
    "load_pretrained",
    "resolve_dtype",
]


class Backbone(PromptEncoding, AttentionReadout, nn.Module):
    """A frozen multimodal LM that scores the token after an answer prefix.

    A family is one subclass, registered with
    :func:`~iqa_lightning.models.backbones.registry.register_family`. It declares its facts as
    class attributes (:attr:`family`, :attr:`model_class`, :attr:`template`,
    :attr:`lora_targets`, :attr:`vision_lora_targets`, :attr:`block_names`, :attr:`tiny`) and
    implements the extension points that differ between families:

    - :meth:`pixel_inputs`: the forward's image keyword arguments (``pixel_values=`` and
      ``image_grid_thw=``, or ``images=``);
    - :meth:`text_inputs`: per-token extras such as position ids (empty when the model derives
      them itself, e.g. when it expands an image placeholder);
    - :meth:`tokenize`: prompt text to ids (a family may splice an id outside the vocabulary);
    - :attr:`num_placeholders` (image tokens in the prompt) apart from
      :attr:`num_image_tokens` (image tokens in the sequence the language model sees);
    - :meth:`feature_module` and :attr:`features_per_image`: where the vision features are;
    - :meth:`projector`, :meth:`vision_tower`, :meth:`language_model`, :meth:`final_norm`,
      :meth:`lm_head`: the parts LoRA, the prompter and the logit lens reach.

    Prompt and conversation encoding come from :class:`~.text.PromptEncoding`, the attention
    read-out at the answer position from :class:`~.attention.AttentionReadout`
    (:meth:`attention_modules` is its extension point), checkpoint loading helpers from
    :mod:`.loading`.

    Args:
        model: The ``transformers`` model (``...ForConditionalGeneration``).
        tokenizer: Its tokenizer.
        image_size: Side of the square input image in pixels.
        image_mean: Per-channel mean the backbone was trained with.
        image_std: Per-channel std the backbone was trained with.
        normalization: ``backbone`` normalises with ``image_mean`` / ``image_std``;
            ``imagenet`` with ImageNet's statistics instead (``model.normalization``, the
            visual-prompt reference's choice, kept reachable to reproduce it).
    """

    family = "base"
    #: Name of the ``transformers`` class that loads the checkpoint.
    model_class: str = ""
    template: ChatTemplate
    #: Linear layers LoRA adapts in the language model / the vision tower, by name.
    lora_targets: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip
    vision_lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    #: Class names of the repeated blocks (checkpointing recomputes them, FSDP shards them).
    block_names: tuple[str, ...] = ()
    #: Dotted paths of the family's tiny random builders (tests, demo).
    tiny: tuple[str, ...] = ()
    #: Input side of the family's published checkpoints, what :meth:`from_pretrained` uses when
    #: none is given; None: the vision tower's own (``vision_config.image_size``).
    default_image_size: int | None = 336
    #: What messages call the vision tower of a family whose tower takes one input side only
    #: (its ``vision_config.image_size``); empty where the family takes other sides too.
    fixed_side_tower: str = ""
    #: What an exported folder's ``scoring.json`` brings (score head, prompt, template), set by
    #: :meth:`from_pretrained`; None for any other checkpoint (:mod:`.scoring_file`).
    scoring: ExportedScoring | None = None

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        normalization: str = "backbone",
    ) -> None:
        self.check_image_size(model, image_size)
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"model.normalization={normalization!r} is not one of {list(NORMALIZATIONS)}"
            )
        if normalization == "imagenet":
            image_mean, image_std = IMAGENET_MEAN, IMAGENET_STD
        self.normalization = normalization
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        self.image_size = int(image_size)
        self.register_buffer(
            "image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer(
            "image_std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.freeze()

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        image_size: int | None = None,
        dtype: str = "bfloat16",
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        normalization: str = "backbone",
        **options,
    ) -> Backbone:
        """Load a checkpoint of this family: model, tokenizer and image statistics
        (:meth:`load_parts`), then the adapter.

        Args:
            pretrained: Hub id or local path (``model.pretrained``).
            image_size: Input side; ``None``: :attr:`default_image_size`.
            dtype: Weight dtype name.
            attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
            trust_remote_code: Allow custom modelling code from the checkpoint (off by default).
            gradient_checkpointing: Recompute block activations in the backward pass
                (non-reentrant), trading compute for activation memory.
            normalization: ``backbone`` (the checkpoint's image statistics) or ``imagenet``.
            **options: The family's own keyword-only constructor options (Bunny's ``resize``,
                mPLUG-Owl2's ``template`` and ``resize``).

        Raises:
            TypeError: An option the family's constructor does not take (before any loading).
        """
        accepted = [
            name
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        for name in options:
            if name not in accepted:
                raise TypeError(
                    f"{cls.__name__}.from_pretrained() got an unexpected keyword argument {name!r}"
                )
        model, tokenizer, mean, std = cls.load_parts(
            pretrained, dtype, attn_implementation, trust_remote_code
        )
        scoring = read_scoring(pretrained)  # an exported folder's scoring.json, else None
        if scoring is not None:
            scoring.check_image_size(image_size)
            image_size = scoring.image_size if image_size is None else image_size
            options.update({k: v for k, v in scoring.options.items() if k in accepted})
        if image_size is None:
            image_size = cls.default_image_size or model.config.vision_config.image_size
        backbone = cls(model, tokenizer, image_size, mean, std, normalization, **options)
        backbone.scoring = scoring
        return backbone.set_gradient_checkpointing(gradient_checkpointing)

    @classmethod
    def load_parts(
        cls,
        pretrained: str,
        dtype: str,
        attn_implementation: str | None,
        trust_remote_code: bool,
    ) -> tuple[nn.Module, object, Sequence[float], Sequence[float]]:
        """``(model, tokenizer, image_mean, image_std)`` of a checkpoint: the
        :attr:`model_class` of ``transformers`` with ``AutoTokenizer`` and
        ``AutoImageProcessor``. A family whose checkpoints load otherwise overrides this."""
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer

        model = load_pretrained(
            getattr(transformers, cls.model_class),
            pretrained,
            f"{cls.family} model",
            dtype=resolve_dtype(dtype),
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        tokenizer = load_pretrained(AutoTokenizer, pretrained, "tokenizer")
        processor = load_pretrained(AutoImageProcessor, pretrained, "image processor")
        return model, tokenizer, processor.image_mean, processor.image_std

    def check_image_size(self, model: nn.Module, image_size: int) -> None:
        """Raise unless ``model`` takes ``image_size`` x ``image_size`` images (the tower's
        own side for a family with :attr:`fixed_side_tower`; any side otherwise).

        Raises:
            ValueError: Naming ``model.image_size`` and the side the tower takes.
        """
        if not self.fixed_side_tower:
            return
        side = model.config.vision_config.image_size
        if int(image_size) != side:
            raise ValueError(
                f"model.image_size={image_size} but the {self.fixed_side_tower} takes "
                f"{side}x{side} images"
            )

    # ----------------------------------------------------------------- freezing
    def freeze(self) -> None:
        """Freeze every backbone weight and put the model in eval mode."""
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> Backbone:
        """Keep the frozen model in eval mode whatever Lightning asks.

        Only adapter dropout (LoRA's) follows ``mode``, so a trained adapter gets its dropout,
        and, with gradient checkpointing on, the blocks' own flag (``transformers`` recomputes a
        block only in training mode; the layers inside stay in eval mode).
        """
        super().train(mode)
        self.model.eval()
        for name, module in self.model.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                module.train(mode)
        for block in checkpointing_blocks(self.model):
            block.training = mode
        return self

    def blocks(self) -> list[nn.Module]:
        """The repeated blocks this family declares (:attr:`block_names`), found in the model.

        Raises:
            ValueError: None of the declared blocks is in the model, so checkpointing and FSDP
                would silently do nothing; names the family and what was looked for.
        """
        found = [m for m in self.model.modules() if type(m).__name__ in self.block_names]
        if not found:
            raise ValueError(
                f"{self.family}: none of the declared blocks {list(self.block_names)} is in "
                f"{type(self.model).__name__}; declare the family's block classes in block_names"
            )
        return found

    def set_gradient_checkpointing(self, enabled: bool) -> Backbone:
        """Recompute each block's activations in the backward pass instead of storing them
        (``model.gradient_checkpointing``; non-reentrant, so frozen inputs are fine).

        Raises:
            ValueError: A declared block cannot recompute (it is not a ``transformers``
                ``GradientCheckpointingLayer``): checkpointing would silently do nothing.
        """
        if enabled:
            from transformers.modeling_layers import GradientCheckpointingLayer

            plain = {
                type(b).__name__
                for b in self.blocks()
                if not isinstance(b, GradientCheckpointingLayer)
            }
            if plain:
                raise ValueError(
                    f"model.gradient_checkpointing=true: the {self.family} blocks "
                    f"{sorted(plain)} cannot recompute their activations"
                )
        set_gradient_checkpointing(self.model, enabled)
        return self.train(self.training)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ----------------------------------------------------------- family parts
    @property
    def num_image_tokens(self) -> int:
        """How many image tokens one image occupies in the sequence the language model sees."""
        raise NotImplementedError

    @property
    def num_placeholders(self) -> int:
        """How many placeholder tokens one image occupies in the prompt ids; the same as
        :attr:`num_image_tokens` for families whose processor expands the placeholder, one for
        families whose model splices the image in."""
        return self.num_image_tokens

    @property
    def features_per_image(self) -> int:
        """Vision features of one image at :meth:`feature_module`'s input (before any merge)."""
        raise NotImplementedError

    @property
    def image_token_id(self) -> int:
        raise NotImplementedError

    @property
    def vision_feature_dim(self) -> int:
        """Width of the vision features at the projector's input."""
        raise NotImplementedError

    def pixel_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Turn [0, 1] pixels ``[B, 3, H, W]`` into the model's image keyword arguments."""
        raise NotImplementedError

    def text_inputs(self, input_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-token keyword arguments besides ids and mask: positions that skip left padding."""
        return {"position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)}

    def projector(self) -> nn.Module:
        """The module that maps vision features into the language model's embedding space."""
        raise NotImplementedError

    def feature_module(self) -> nn.Module:
        """The hook point of :meth:`feature_hook`: the vision features are its first input."""
        return self.projector()

    def vision_tower(self) -> nn.Module:
        """The vision encoder (before the projector)."""
        raise NotImplementedError

    def language_model(self) -> nn.Module:
        """The decoder-only language model (``model.model.language_model`` in both families)."""
        return self.model.model.language_model

    def final_norm(self) -> nn.Module:
        """The norm after the last decoder layer (applied before the LM head)."""
        return self.language_model().norm

    def lm_head(self) -> nn.Module:
        """The output projection from hidden states to vocabulary logits."""
        return self.model.lm_head

    # ---------------------------------------------------------------- forward
    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise [0, 1] pixels with the backbone's own statistics (differentiable)."""
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"pixels are {tuple(pixels.shape[-2:])}, the backbone expects "
                f"{self.image_size}x{self.image_size} (model.image_size)"
            )
        return (pixels.float() - self.image_mean) / self.image_std

    def _forward(self, pixels, input_ids, attention_mask=None, **kwargs):
        # pixels=None: a text-only forward; the prompt must then hold no image token.
        if pixels is None:
            device, batch = self.lm_head().weight.device, input_ids.shape[0]
        else:
            device, batch = pixels.device, pixels.shape[0]
        input_ids = input_ids.to(device)
        if input_ids.shape[0] == 1 and batch > 1:
            input_ids = input_ids.expand(batch, -1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(device).expand_as(input_ids)
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            **self.text_inputs(input_ids, attention_mask),
            **(self.pixel_inputs(pixels) if pixels is not None else {}),
            **kwargs,
        )

    def hidden_states(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """The language model's hidden states at the last position, one ``[B, H]`` per layer
        output (the embeddings first, the last layer's output before :meth:`final_norm` last)."""
        out = self._forward(
            pixels, input_ids, attention_mask, output_hidden_states=True, logits_to_keep=1
        )
        return tuple(h[:, -1] for h in out.hidden_states)

    def layer_logits(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logit lens: ``[layers, B, vocab]`` fp32 next-token logits read from each decoder
        layer's output through :meth:`final_norm` and :meth:`lm_head`; the last row equals
        :meth:`next_token_logits` (transformers' last hidden state is already normed)."""
        states = self.hidden_states(pixels, input_ids, attention_mask)[1:]
        norm, head = self.final_norm(), self.lm_head()
        rows = [head(norm(h)) for h in states[:-1]] + [head(states[-1])]
        return torch.stack(rows).float()

    def next_token_logits(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of the token that follows the prompt, one row per image, in fp32.

        Args:
            pixels: ``[B, 3, H, W]`` in [0, 1] at ``image_size`` (after any pixel prompt), or
                None for a text-only prompt (no image token in ``input_ids``; every method
                that runs the model takes None the same way).
            input_ids: ``[1, L]`` (one prompt for all) or ``[B, L]`` left-padded prompt ids.
            attention_mask: ``[B, L]`` for left-padded prompts; all ones when None.

        Returns:
            ``[B, vocab]`` float32 logits at the answer position.
        """
        out = self._forward(pixels, input_ids, attention_mask, logits_to_keep=1)
        return out.logits[:, -1].float()

    def lm_loss(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Next-token cross-entropy (fp32) on the tokens whose label is not -100."""
        out = self._forward(pixels, input_ids, attention_mask)
        logits = out.logits[:, :-1].float()
        target = labels[:, 1:].to(logits.device)
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
        )

    @torch.no_grad()
    def generate(
        self,
        pixels: torch.Tensor,
        questions: Sequence[str],
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> list[str]:
        """Answers to one question per image (for explanations; scoring never generates).

        Greedy at ``temperature=0`` (default); otherwise sampled from the softmax of the logits
        divided by ``temperature`` within the ``top_p`` nucleus, from torch's global generator
        (seed it for repeatable draws)."""
        ids, mask = self.encode_prompts(questions)
        ids, mask = ids.to(pixels.device), mask.to(pixels.device)
        extra = {k: v for k, v in self.text_inputs(ids, mask).items() if k != "position_ids"}
        sampling: dict = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p),
                        "top_k": 0}  # fmt: skip
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            **sampling,
            pad_token_id=self.tokenizer.pad_token_id,
            **extra,
            **self.pixel_inputs(pixels),
        )
        return self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    @contextmanager
    def feature_hook(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Within the block, vision features ``[B, N, D]`` pass through ``fn`` at
        :meth:`feature_module`'s input.

        Families that flatten features across images (Qwen2-VL) are reshaped to
        ``[B, features_per_image, D]`` for ``fn`` and back.
        """

        def pre_hook(module, args):
            features = args[0]
            if features.dim() == 2:
                shaped = features.view(-1, self.features_per_image, features.shape[-1])
                return (fn(shaped).reshape(features.shape), *args[1:])
            return (fn(features), *args[1:])

        handle = self.feature_module().register_forward_pre_hook(pre_hook)
        try:
            yield
        finally:
            handle.remove()
