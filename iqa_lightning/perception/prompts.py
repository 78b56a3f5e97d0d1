"""The inference-stage prompt: the question and an image's description, with or without it.

Perception-then-inference tuning (arXiv 2512.09555) rates quality from a description of the
image's basic visual features. The inference prompt is one user turn in the backbone's chat
template whose text is ::

    {description_lead}{description}\\n{question}

followed by the answer lead and the score head's answer prefix, so the quality word is read at
the same answer position as every other scoring prompt. ``image=True`` puts the image's
placeholder tokens at the template's usual place (the family's first user turn);
``image=False`` uses the template's text-only turn (``next_user`` after ``system``), so the
prompt holds no image token at all and the model reads the description alone.

The ids come from the backbone's own ``encode_with_offsets`` (mPLUG-Owl2 splices its image id
there). The spans are token positions ``[start, end)`` in the returned ids (for LLaVA and
Qwen2-VL the same positions in the language model's sequence; a family that splices the image in
maps them with
:meth:`~iqa_lightning.models.backbones.attention.AttentionReadout.sequence_positions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DESCRIPTION_LEAD",
    "InferenceBatch",
    "InferencePrompt",
    "inference_batch",
    "inference_prompt",
]

#: Text before the description in the inference prompt (``inference.description_lead``).
DESCRIPTION_LEAD = "Basic visual features of the image: "

Span = tuple[int, int]


@dataclass(frozen=True)
class InferencePrompt:
    """One encoded inference prompt.

    Attributes:
        ids: Token ids, ending at the answer position.
        image: Span of the image placeholder tokens, or None (no image).
        question: Span of the question's tokens.
        description: Span of the description's tokens.
        text: The rendered prompt text.
    """

    ids: list[int]
    image: Span | None
    question: Span
    description: Span
    text: str

    @property
    def answer_position(self) -> int:
        """Index of the token whose next-token logits give the score (the last one)."""
        return len(self.ids) - 1


@dataclass(frozen=True)
class InferenceBatch:
    """Left-padded inference prompts of a batch.

    Attributes:
        ids: ``[B, L]`` token ids.
        mask: ``[B, L]`` attention mask (0 on the left padding).
        prompts: Each row's :class:`InferencePrompt`; its spans shifted by the padding, so they
            index ``ids[row]``.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    prompts: list[InferencePrompt]


def _user_text(question: str, description: str, lead: str) -> tuple[str, Span, Span]:
    text = f"{lead}{description}\n{question}"
    start = len(lead)
    described = (start, start + len(description))
    asked = (len(text) - len(question), len(text))
    return text, asked, described


def _token_span(offsets: Sequence[tuple[int, int]], chars: Span, what: str) -> Span:
    inside = [
        i for i, (b, e) in enumerate(offsets) if e > b and b < chars[1] and chars[0] < e
    ]  # fmt: skip
    if not inside:
        raise ValueError(f"the inference prompt's {what} is empty: it became no token")
    return inside[0], inside[-1] + 1


def inference_prompt(
    backbone,
    question: str,
    description: str,
    image: bool,
    answer_prefix: str = "",
    lead: str = DESCRIPTION_LEAD,
    ask: str | None = None,
) -> InferencePrompt:
    """Encode the inference prompt (module docstring) and find its spans.

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone` (fast tokenizer).
        question: The score question (``score.question``).
        description: The image's description.
        image: Keep the image's placeholder tokens in the prompt (``inference.image=visible``);
            False: none at all (``inference.image=none``).
        answer_prefix: The score head's answer prefix.
        lead: Text before the description.
        ask: The perception question: the describe-then-rate dialogue instead of one turn
            (``inference.image=dialogue``): the first user turn asks it with the image, the
            assistant answers with the description, and a second user turn asks ``question``
            (``lead`` is not used). Needs ``image``.

    Raises:
        ValueError: The description or question is empty, or the image tokens are not what the
            family expects (``image=True``) or present (``image=False``).
    """
    if not str(description).strip():
        raise ValueError("the inference prompt needs a non-empty description")
    t = backbone.template
    if ask is not None:
        if not image:
            raise ValueError("the describe-then-rate dialogue shows the image in its first turn")
        head, _ = backbone.render_conversation([(ask, "")])
        head = head[: len(head) - len(t.answer_end)]  # up to the description
        described = (len(head), len(head) + len(str(description)))
        head += str(description) + t.answer_end
        before_question = t.next_user.split("{question}", 1)[0]
        asked = (len(head) + len(before_question), len(head) + len(before_question) + len(question))
        user_turn = head + t.next_user.format(question=question)
        text = user_turn + (t.answer_lead + answer_prefix if answer_prefix else "")
        return _encoded(backbone, text, True, asked, described, 0)
    user, asked, described = _user_text(question, str(description), lead)
    if image:
        placeholder = backbone._image_placeholder()
        head = t.system + t.first_user.split("{question}", 1)[0].format(image=placeholder)
        turn = t.first_user.format(image=placeholder, question=user)
    else:
        head = t.system + t.next_user.split("{question}", 1)[0]
        turn = t.next_user.format(question=user)
    text = t.system + turn + (t.answer_lead + answer_prefix if answer_prefix else "")
    return _encoded(backbone, text, image, asked, described, len(head))


def _encoded(
    backbone, text: str, image: bool, asked: Span, described: Span, shift: int
) -> InferencePrompt:
    """The ids of ``text`` and the token spans of its image, question and description (their
    character spans ``asked`` and ``described`` start ``shift`` characters in)."""
    ids, offsets = backbone.encode_with_offsets(text)
    found = [i for i, token in enumerate(ids) if token == backbone.image_token_id]
    if image:
        backbone._check_image_tokens(torch.tensor(ids))
        image_span: Span | None = (found[0], found[-1] + 1)
    else:
        if found:
            raise ValueError(
                f"the text-only inference prompt holds {len(found)} image tokens; the question "
                "or description contains the image token text"
            )
        image_span = None
    question_span = _token_span(offsets, (asked[0] + shift, asked[1] + shift), "question")
    description_span = _token_span(
        offsets, (described[0] + shift, described[1] + shift), "description"
    )
    return InferencePrompt(ids, image_span, question_span, description_span, text)


def _shifted(prompt: InferencePrompt, pad: int) -> InferencePrompt:
    def move(span: Span | None) -> Span | None:
        return None if span is None else (span[0] + pad, span[1] + pad)

    return InferencePrompt(
        prompt.ids, move(prompt.image), move(prompt.question), move(prompt.description),
        prompt.text,
    )  # fmt: skip


def inference_batch(
    backbone,
    question: str,
    descriptions: Sequence[str],
    image: bool,
    answer_prefix: str = "",
    lead: str = DESCRIPTION_LEAD,
    ask: str | None = None,
) -> InferenceBatch:
    """:func:`inference_prompt` for one description per image, left-padded into a batch."""
    prompts = [
        inference_prompt(backbone, question, d, image, answer_prefix, lead, ask)
        for d in descriptions
    ]
    length = max(len(p.ids) for p in prompts)
    pad_id = backbone.tokenizer.pad_token_id
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    shifted = []
    for row, prompt in enumerate(prompts):
        pad = length - len(prompt.ids)
        ids[row, pad:] = torch.tensor(prompt.ids)
        mask[row, pad:] = 1
        shifted.append(_shifted(prompt, pad))
    return InferenceBatch(ids, mask, shifted)
