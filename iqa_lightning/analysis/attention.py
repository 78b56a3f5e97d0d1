"""Attention of the answer position to the image, the question and the description.

    python -m iqa_lightning.analyze run=<run folder> analysis=attention

Method of arXiv 2512.09555 (https://arxiv.org/abs/2512.09555), whose protocol is not published;
the definition here is ours. Each image goes through the run's scoring path exactly as scoring
does (pixel prompt, or the feature prompter's hook conditioned on the question; for a run whose
prompt holds a description, its inference prompt after the description that
``analysis.description`` names, :mod:`~iqa_lightning.analysis.describing`: see
:func:`run_prompts`), with
the language model switched to eager attention for the read-out
(:meth:`~iqa_lightning.models.backbones.attention.AttentionReadout.last_token_attention`). At
the answer position (the last prompt token, where the score head reads the level words) layer
``l``'s attention weights ``a[l, h, s]`` over the sequence positions ``s`` are averaged over the
heads ``h``. A part's ``mass`` is that mean summed over the part's positions: ``image`` (the
image tokens the language model sees), ``question`` (the question's tokens), ``description``
(the description's tokens, when the prompt has one), and ``other`` = 1 minus their sum (the
system text, the chat template, the answer prefix). The parts never overlap, so the four masses
of an image and layer sum to 1. ``per_token`` = mass / the part's position count.

Written under ``<run>/analysis/``: ``attention.csv`` (``layer, part, mean_mass,
mean_per_token, mean_positions``: means over the images that hold the part; ``other`` is over
every image), ``attention.json`` (``parts``, ``layers``, ``n_images``, ``<part>_mass``: the mean
over layers and images, and ``mass``: part -> the per-layer means) and ``attention.png`` (the
per-layer masses stacked).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqa_lightning.analysis import describing
from iqa_lightning.analysis.common import concat, image_ids
from iqa_lightning.analysis.segments import (
    pad_segments,
    score_prompt_segments,
    segment_mass,
)
from iqa_lightning.errors import ConfigError

FILES = ("attention.csv", "attention.json", "attention.png")
PARTS = ("image", "question", "description")
COLUMNS = ("layer", "part", "mean_mass", "mean_per_token", "mean_positions")


def check(options: Mapping) -> None:
    """Check the description options (used by a described run) before any image is read."""
    describing.check_source(options)


def run_prompts(scorer, pixels: torch.Tensor, batch: Mapping | None, options: Mapping):
    """What the run's model reads for each image: ``(pixels or None, ids, mask, spans,
    instructions)``, ``ids`` / ``mask`` ``[B, L]`` left-padded, ``spans`` per row.

    A described run reads its inference prompt
    (:meth:`~iqa_lightning.perception.scorer.DescriptionScorer.inference_inputs`) after each
    image's description (:func:`~iqa_lightning.analysis.describing.descriptions`), with the
    image only when its ``inference.image`` is ``visible``; any other run reads the score
    prompt (:func:`~iqa_lightning.analysis.segments.score_prompt_segments`). The score
    question conditions the prompter either way.
    """
    n = pixels.shape[0]
    instructions = [scorer.word_head.question] * n
    if describing.is_described(scorer):
        texts = describing.descriptions(scorer, pixels, batch, options)
        inputs = scorer.inference_inputs(texts)
        spans = [
            {part: getattr(p, part) or (0, 0) for part in PARTS} for p in inputs.prompts
        ]  # fmt: skip
        return scorer.image_input(pixels), inputs.ids, inputs.mask, spans, instructions
    score = scorer.word_head
    segments = score_prompt_segments(scorer.backbone, score.question, score.answer_prefix)
    if segments.ids != scorer.input_ids[0].tolist():
        raise ValueError("the score prompt's segments do not match the scorer's prompt ids")
    ids, mask, spans = pad_segments([segments] * n, scorer.backbone.tokenizer.pad_token_id)
    return scorer.prompt(pixels), ids, mask, spans, instructions


def part_mass(scorer, pixels, ids: torch.Tensor, mask: torch.Tensor, spans, instructions):
    """``(mass [B, layers, parts], positions [B, parts])`` of the padded prompts (parts as
    :data:`PARTS`)."""
    backbone = scorer.backbone
    device = pixels.device if pixels is not None else backbone.lm_head().weight.device
    ids, mask = ids.to(device), mask.to(device)
    with scorer.features(list(instructions)):
        weights = backbone.last_token_attention(pixels, ids, mask)
    positions = backbone.sequence_positions(ids.cpu())
    if positions[0, -1] != weights.shape[-1]:
        raise ValueError(
            f"{backbone.family}: the prompt maps to {int(positions[0, -1])} sequence positions "
            f"but the model attended over {weights.shape[-1]}"
        )
    return segment_mass(weights.cpu(), positions, spans, PARTS)


def compute(scorer, pixels: torch.Tensor, options: Mapping, batch=None) -> dict[str, torch.Tensor]:
    """One batch: ``mass`` ``[B, layers, parts]`` and ``positions`` ``[B, parts]``."""
    mass, positions = part_mass(scorer, *run_prompts(scorer, pixels, batch, options))
    return {"mass": mass, "positions": positions}


@dataclass
class Attention:
    """The result of :func:`summarise`.

    Attributes:
        image_ids: The images, in loader order.
        mass: ``[N, layers, parts]`` per-image masses (parts as :data:`PARTS`).
        positions: ``[N, parts]`` the parts' position counts.
    """

    image_ids: list[str]
    mass: torch.Tensor
    positions: torch.Tensor

    @property
    def layers(self) -> int:
        return int(self.mass.shape[1])

    @property
    def parts(self) -> list[str]:
        """The parts some image holds, in :data:`PARTS` order, then ``other``."""
        held = [p for k, p in enumerate(PARTS) if bool((self.positions[:, k] > 0).any())]
        return [*held, "other"]

    def table(self) -> dict[str, dict[str, torch.Tensor]]:
        """Part -> ``mass`` / ``per_token`` / ``positions`` ``[layers]`` means over the images
        that hold the part (``other`` over every image)."""
        out = {}
        for k, part in enumerate(PARTS):
            has = self.positions[:, k] > 0
            if not bool(has.any()):
                continue
            mass = self.mass[has, :, k]
            count = self.positions[has, k].double()
            out[part] = {
                "mass": mass.mean(0),
                "per_token": (mass / count[:, None]).mean(0),
                "positions": count.mean().expand(self.layers),
            }
        none = torch.full((self.layers,), float("nan"), dtype=torch.float64)
        other = 1.0 - self.mass.sum(-1)
        out["other"] = {"mass": other.mean(0), "per_token": none, "positions": none}
        return out

    def summary(self) -> dict[str, Any]:
        """What ``attention.json`` holds."""
        table = self.table()
        out: dict[str, Any] = {
            "parts": self.parts,
            "layers": self.layers,
            "n_images": len(self.image_ids),
        }
        for part, values in table.items():
            out[f"{part}_mass"] = float(values["mass"].mean())
        out["mass"] = {part: [float(v) for v in values["mass"]] for part, values in table.items()}
        return out


def summarise(batches: list[dict[str, Any]], scorer, options: Mapping) -> Attention:
    """Join the per-batch masses."""
    if not batches:
        raise ConfigError("attention got no image: the dataset split is empty")
    return Attention(image_ids(batches), concat(batches, "mass"), concat(batches, "positions"))


def write(result: Attention, folder: Path) -> list[Path]:
    """Write ``attention.csv``, ``attention.json`` and ``attention.png`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FILES]
    table = result.table()
    with open(paths[0], "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for layer in range(result.layers):
            for part, values in table.items():
                cells = [float(values[c][layer]) for c in ("mass", "per_token", "positions")]
                out.writerow([layer + 1, part, *("" if v != v else f"{v:.8g}" for v in cells)])
    paths[1].write_text(json.dumps(result.summary(), indent=2) + "\n")
    stacked(result).savefig(paths[2], dpi=120)
    return paths


def stacked(result: Attention):
    """Per layer (x), the mean masses of the parts stacked to 1."""
    from matplotlib.figure import Figure

    table = result.table()
    fig = Figure(figsize=(2.5 + 0.45 * result.layers, 3.4), layout="constrained")
    ax = fig.subplots()
    x = list(range(1, result.layers + 1))
    bottom = torch.zeros(result.layers, dtype=torch.float64)
    colours = {"image": "tab:green", "question": "tab:blue", "description": "tab:orange",
               "other": "tab:gray"}  # fmt: skip
    for part, values in table.items():
        ax.bar(x, values["mass"].numpy(), bottom=bottom.numpy(), label=part, color=colours[part])
        bottom = bottom + values["mass"]
    ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel("attention mass of the answer position")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"attention, mean over heads and {len(result.image_ids)} images", fontsize=9)
    return fig
