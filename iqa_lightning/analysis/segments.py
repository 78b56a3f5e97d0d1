"""Named token spans of a prompt (image, question, description) and the attention mass on them.

A :class:`PromptSegments` is one prompt's ids and the ``[start, end)`` spans of its named parts
in those ids; :func:`pad_segments` batches several (left padding, spans shifted);
:func:`segment_mass` sums the attention weights of the answer position over each part, with the
backbone mapping prompt tokens to sequence positions
(:meth:`~iqa_lightning.models.backbones.attention.AttentionReadout.sequence_positions`), so a
family that splices its image in is handled without family code here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class PromptSegments:
    """One prompt: its ids and the spans of its named parts.

    Attributes:
        ids: The prompt's token ids (what the backbone's ``tokenize`` gives).
        spans: Part name -> ``(start, end)`` token span in ``ids``; an empty span
            (``start == end``) is a part the prompt does not hold.
    """

    ids: list[int]
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)


def image_span(backbone, ids: Sequence[int]) -> tuple[int, int]:
    """The span of the image placeholder tokens in ``ids`` (``(0, 0)`` when there are none).

    Raises:
        ValueError: The placeholders are not one contiguous run.
    """
    where = [i for i, t in enumerate(ids) if t == backbone.image_token_id]
    if not where:
        return (0, 0)
    if where[-1] - where[0] + 1 != len(where):
        raise ValueError(f"{backbone.family}: the image placeholders are not contiguous")
    return (where[0], where[-1] + 1)


def char_span_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int):
    """The token span of the characters ``[start, end)`` (tokens that overlap them), given each
    token's character span; ``(0, 0)`` when no token does."""
    hits = [i for i, (b, e) in enumerate(offsets) if e > b and b < end and start < e]
    return (hits[0], hits[-1] + 1) if hits else (0, 0)


def score_prompt_segments(backbone, question: str, answer_prefix: str = "") -> PromptSegments:
    """The score prompt (``backbone.encode_prompt(question, answer_prefix)``) with the spans of
    its ``image`` placeholders and its ``question`` (character offsets from the backbone's
    ``encode_with_offsets``).

    Raises:
        TypeError: The tokenizer gives no character offsets (not a fast tokenizer).
    """
    ids = backbone.encode_prompt(question, answer_prefix)[0].tolist()
    text = backbone.build_prompt(question, answer_prefix)
    encoded, offsets = backbone.encode_with_offsets(text)
    if list(encoded) != ids:
        raise ValueError(f"{backbone.family}: the score prompt's ids are not its text tokenised")
    t = backbone.template
    marker = "\x00"
    head = t.system + t.first_user.format(image=backbone._image_placeholder(), question=marker)
    start = head.index(marker)
    spans = {
        "image": image_span(backbone, ids),
        "question": char_span_tokens(offsets, start, start + len(question)),
    }
    return PromptSegments(ids, spans)


def pad_segments(
    prompts: Sequence[PromptSegments], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, tuple[int, int]]]]:
    """Left-pad the prompts to ``(ids, mask)`` ``[B, L]``; each prompt's spans shifted by its
    padding."""
    length = max(len(p.ids) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    spans = []
    for row, p in enumerate(prompts):
        pad = length - len(p.ids)
        ids[row, pad:] = torch.tensor(p.ids, dtype=torch.long)
        mask[row, pad:] = 1
        spans.append({k: (s + pad, e + pad) if e > s else (0, 0) for k, (s, e) in p.spans.items()})
    return ids, mask, spans


def segment_mass(
    weights: torch.Tensor,
    positions: torch.Tensor,
    spans: Sequence[dict[str, tuple[int, int]]],
    names: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mass of the answer position on each named part, per layer.

    Args:
        weights: ``[layers, B, heads, S]`` attention rows
            (:meth:`~iqa_lightning.models.backbones.attention.AttentionReadout.last_token_attention`).
        positions: ``[B, L + 1]`` prompt token -> sequence position boundaries.
        spans: Per image, part name -> token span in its (padded) prompt ids.
        names: The parts, in output order (a part an image lacks has mass 0 and length 0).

    Returns:
        ``mass`` ``[B, layers, parts]`` (fp64): the head-mean of the weights summed over the
        part's sequence positions, and ``length`` ``[B, parts]``: those positions' count.
    """
    mean = weights.double().mean(2)  # [layers, B, S]
    layers, batch, seq = mean.shape
    member = torch.zeros(batch, len(names), seq, dtype=torch.float64)
    for row, row_spans in enumerate(spans):
        for k, name in enumerate(names):
            start, end = row_spans.get(name, (0, 0))
            if end > start:
                member[row, k, int(positions[row, start]) : int(positions[row, end])] = 1
    mass = torch.einsum("lbs,bks->blk", mean, member)
    return mass, member.sum(-1)
