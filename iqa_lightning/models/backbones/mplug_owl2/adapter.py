"""mPLUG-Owl2 family adapter: MAGAer13/mplug-owl2-llama2-7b and the checkpoints fine-tuned from
it (Q-Align / One-Align, https://arxiv.org/abs/2312.17090; DeQA-Score,
https://arxiv.org/abs/2501.11561), native on current ``transformers``.

The prompt holds one ``<|image|>`` placeholder per image; :meth:`MplugOwl2Backbone.tokenize`
tokenises the text around it chunk by chunk and puts -200 in its place, as mPLUG-Owl2's
``tokenizer_image_token`` does, and the model splices the abstractor's tokens in.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from iqa_lightning.models.backbones.base import Backbone
from iqa_lightning.models.backbones.mplug_owl2.loading import load_mplug_owl2
from iqa_lightning.models.backbones.mplug_owl2.modeling import IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from iqa_lightning.models.backbones.registry import register_family
from iqa_lightning.models.backbones.text import USER_ASSISTANT
from iqa_lightning.preprocessing import check_resize

# mPLUG-Owl2's conversation (conv_mplug_owl2, TWO_NO_SYS: sep " ", sep2 "</s>"); the image
# opens the first question, as in its training data and the visual-prompt paper's prompt.
OWL2_TEMPLATE = replace(USER_ASSISTANT, first_user="USER: {image}{question} ASSISTANT:")
# Q-Align's scorer (q_align/evaluate/scorer.py): the question first, the image on its own line.
QALIGN_TEMPLATE = replace(USER_ASSISTANT, first_user="USER: {question}\n{image}\nASSISTANT:")
TEMPLATES = {"owl2": OWL2_TEMPLATE, "qalign": QALIGN_TEMPLATE}
#: How mPLUG-Owl2 makes an image square before its CLIP processor: padded with the mean colour.
RESIZE = "pad_square"


@register_family
class MplugOwl2Backbone(Backbone):
    """Adapter for :class:`~.modeling.MplugOwl2ForCausalLM`.

    Args:
        model: The mPLUG-Owl2 model.
        tokenizer: Its LLaMA SentencePiece tokenizer.
        image_size: Input side; must equal the ViT's ``image_size``.
        image_mean: Normalisation mean (CLIP statistics, from ``preprocessor_config.json``).
        image_std: Normalisation std.
        normalization: ``backbone`` or ``imagenet``.
        template: ``owl2`` (``USER: <|image|>{question} ASSISTANT:``) or ``qalign`` (Q-Align's
            scorer: ``USER: {question}\\n<|image|>\\nASSISTANT:``).
        resize: How images become square before this backbone (``pad_square``: padded with the
            mean colour, as the checkpoints were trained); the data loader's default for this
            family (``dataset.resize``).
    """

    family = "mplug_owl2"
    model_class = "MplugOwl2ForCausalLM"
    template = OWL2_TEMPLATE
    # k / v are multiway: one Linear per modality (text .0, visual .1).
    lora_targets = (
        "q_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
        "k_proj.multiway.0", "k_proj.multiway.1", "v_proj.multiway.0", "v_proj.multiway.1",
    )  # fmt: skip
    vision_lora_targets = ("query_key_value", "dense", "fc1", "fc2")
    block_names = ("MplugOwl2DecoderLayer", "MplugOwl2VisionLayer", "MplugOwl2AbstractorLayer")
    tiny = ("iqa_lightning.models.backbones.mplug_owl2.tiny.build_tiny_mplug_owl2",)
    default_image_size = None  # the ViT's (448 for the published checkpoints)
    fixed_side_tower = "mPLUG-Owl2 vision model"
    #: Takes ``[B, frames, 3, H, W]`` pixels: a video's frames in its one placeholder
    #: (:meth:`~.modeling.MplugOwl2Model.encode_frames`, Q-Align's video scorer).
    takes_frames = True

    def __init__(self, *args, template: str = "owl2", resize: str = RESIZE, **kwargs) -> None:
        if template not in TEMPLATES:
            raise ValueError(f"model.template={template!r} is not one of {sorted(TEMPLATES)}")
        check_resize(resize)
        super().__init__(*args, **kwargs)
        self.resize = resize
        self.template = TEMPLATES[template]
        self.template_name = template

    @classmethod
    def load_parts(cls, pretrained, dtype, attn_implementation, trust_remote_code):
        """A published mPLUG-Owl2 checkpoint folder or hub id as it is (see
        :func:`~.loading.load_mplug_owl2`).

        Raises:
            ValueError: ``trust_remote_code`` is set: the model is native, the checkpoint's
                own code is never run.
        """
        if trust_remote_code:
            raise ValueError(
                "model.trust_remote_code=true: mPLUG-Owl2 is native here, no checkpoint code runs"
            )
        return load_mplug_owl2(pretrained, dtype, attn_implementation)

    # ------------------------------------------------------------------- text
    @property
    def image_token_id(self) -> int:
        return IMAGE_TOKEN_INDEX

    def _image_placeholder(self) -> str:
        return IMAGE_PLACEHOLDER

    def tokenize(self, text: str) -> list[int]:
        """Ids of a prompt, each ``<|image|>`` spliced as -200 (mPLUG-Owl2's
        ``tokenizer_image_token``: every chunk is tokenised on its own, with BOS kept only in
        front of the first chunk)."""
        return self.encode_with_offsets(text, offsets=False)[0]

    def encode_with_offsets(self, text: str, offsets: bool = True):
        """Ids of a text tokenised chunk by chunk around each ``<|image|>``, and the character
        span of every id (the placeholder's text for -200)."""
        chunks = text.split(IMAGE_PLACEHOLDER)
        encoded, starts, start = [], [], 0
        for chunk in chunks:
            if chunk:
                enc = self.tokenizer(chunk, return_offsets_mapping=offsets)
                spans = enc.offset_mapping if offsets else [(0, 0)] * len(enc.input_ids)
                encoded.append((list(enc.input_ids), [tuple(s) for s in spans]))
            else:
                encoded.append(([], []))
            starts.append(start)
            start += len(chunk) + len(IMAGE_PLACEHOLDER)
        bos = self.tokenizer.bos_token_id
        skip = int(bool(encoded[0][0]) and encoded[0][0][0] == bos)
        ids, spans = ([bos], [(0, 0)]) if skip else ([], [])
        for i, ((chunk_ids, chunk_spans), begin) in enumerate(zip(encoded, starts, strict=True)):
            if i:
                ids.append(IMAGE_TOKEN_INDEX)
                spans.append((begin - len(IMAGE_PLACEHOLDER), begin))
            ids.extend(chunk_ids[skip:])
            spans.extend((b + begin, e + begin) if e > b else (b, e) for b, e in chunk_spans[skip:])
        return ids, spans

    def encode_prompts(
        self, questions, answer_prefix: str = ""
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask ``[B, L]``, each prompt spliced as :meth:`tokenize` does."""
        rows = [self.tokenize(self.build_prompt(q, answer_prefix)) for q in questions]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, length - len(row) :] = torch.tensor(row)
            mask[i, length - len(row) :] = 1
        return ids, mask

    def text_inputs(self, input_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        # Positions are laid out by the model over the spliced sequence.
        return {}

    # ----------------------------------------------------------------- vision
    @property
    def num_placeholders(self) -> int:
        return 1

    @property
    def num_image_tokens(self) -> int:
        return self.model.config.abstractor_config.num_learnable_queries + 1

    @property
    def features_per_image(self) -> int:
        vision = self.model.config.vision_config
        return (self.image_size // vision.patch_size) ** 2 + 1

    @property
    def vision_feature_dim(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    def pixel_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.normalize(pixels).to(self.dtype)}

    def projector(self) -> nn.Module:
        return self.model.model.visual_abstractor

    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_model

    def language_model(self) -> nn.Module:
        return self.model.model

    def lm_loss(self, pixels, input_ids, attention_mask, labels) -> torch.Tensor:
        """Next-token cross-entropy (fp32) over the spliced sequence; image tokens unlabelled."""
        return self._forward(pixels, input_ids, attention_mask, labels=labels).loss
