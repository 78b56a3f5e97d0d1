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

Per token (the paper's figure: the answer position's attention over each token of the context,
averaged over samples): a prompt token's weight is the head- and layer-mean of the weights summed
over its sequence positions; the image's tokens count as one entry, ``<image>`` (the image
mass); the other tokens are keyed by their part and their token text, so a token that a prompt
holds twice counts twice and the same word in the question and in a description are two
entries. Each entry's ``mean_weight`` is the mean over its occurrences; ``images`` counts the
images holding it. With one prompt for every image (the score prompt) the entries are the
prompt's tokens, averaged over the images.

Written under ``<run>/analysis/``: ``attention.csv`` (``layer, part, mean_mass,
mean_per_token, mean_positions``: means over the images that hold the part; ``other`` is over
every image), ``attention.json`` (``parts``, ``layers``, ``n_images``, ``<part>_mass``: the mean
over layers and images, ``mass``: part -> the per-layer means, and ``top_tokens``: the
``analysis.top_tokens`` entries of highest mean weight), ``attention.png`` (the per-layer
masses stacked), ``attention_tokens.csv`` (``part, token, mean_weight, occurrences, images``,
every entry, highest weight first) and ``attention_tokens.png`` (the top entries as bars).
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

FILES = (
    "attention.csv", "attention.json", "attention.png", "attention_tokens.csv",
    "attention_tokens.png",
)  # fmt: skip
TOKEN_COLUMNS = ("part", "token", "mean_weight", "occurrences", "images")
IMAGE_ENTRY = "<image>"
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
    image unless its ``inference.image`` is ``none``; any other run reads the score
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


def _readout(scorer, pixels, ids: torch.Tensor, mask: torch.Tensor, instructions):
    """The answer position's attention ``[layers, B, heads, S]`` and the prompt tokens'
    sequence positions ``[B, L + 1]``."""
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
    return weights.cpu(), positions


def part_mass(scorer, pixels, ids: torch.Tensor, mask: torch.Tensor, spans, instructions):
    """``(mass [B, layers, parts], positions [B, parts])`` of the padded prompts (parts as
    :data:`PARTS`)."""
    weights, positions = _readout(scorer, pixels, ids, mask, instructions)
    return segment_mass(weights, positions, spans, PARTS)


def token_weights(
    weights: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
    spans, tokenizer,
) -> list[list[tuple[str, str, float]]]:  # fmt: skip
    """Per image, ``(part, token, weight)`` of each prompt token (module docstring): the
    image's tokens as one ``<image>`` entry, padding left out."""
    mean = weights.double().mean(2).mean(0)  # [B, S]: over heads, then layers
    out = []
    for row in range(ids.shape[0]):
        part_of = {}
        for name, (start, end) in spans[row].items():
            part_of.update({t: name for t in range(start, end)})
        entries, image = [], None
        for t in range(ids.shape[1]):
            if not bool(mask[row, t]):
                continue
            weight = float(mean[row, int(positions[row, t]) : int(positions[row, t + 1])].sum())
            part = part_of.get(t, "other")
            if part == "image":
                image = weight + (image or 0.0)
                continue
            entries.append((part, tokenizer.convert_ids_to_tokens(int(ids[row, t])), weight))
        if image is not None:
            entries.insert(0, ("image", IMAGE_ENTRY, image))
        out.append(entries)
    return out


def compute(scorer, pixels: torch.Tensor, options: Mapping, batch=None) -> dict[str, Any]:
    """One batch: ``mass`` ``[B, layers, parts]``, ``positions`` ``[B, parts]`` and
    ``tokens`` (per image, :func:`token_weights`)."""
    pixels_in, ids, mask, spans, instructions = run_prompts(scorer, pixels, batch, options)
    weights, positions = _readout(scorer, pixels_in, ids, mask, instructions)
    mass, lengths = segment_mass(weights, positions, spans, PARTS)
    tokens = token_weights(weights, positions, ids, mask, spans, scorer.backbone.tokenizer)
    return {"mass": mass, "positions": lengths, "tokens": tokens}


@dataclass
class Attention:
    """The result of :func:`summarise`.

    Attributes:
        image_ids: The images, in loader order.
        mass: ``[N, layers, parts]`` per-image masses (parts as :data:`PARTS`).
        positions: ``[N, parts]`` the parts' position counts.
        tokens: Per image, ``(part, token, weight)`` (:func:`token_weights`).
        top_tokens: How many entries ``top_tokens`` in the summary lists.
    """

    image_ids: list[str]
    mass: torch.Tensor
    positions: torch.Tensor
    tokens: list[list[tuple[str, str, float]]]
    top_tokens: int = 20

    def token_table(self) -> list[dict[str, Any]]:
        """Every ``(part, token)`` entry with its mean weight over its occurrences, the
        occurrence count and the number of images holding it, highest weight first."""
        sums: dict[tuple[str, str], list[float]] = {}
        images: dict[tuple[str, str], int] = {}
        for entries in self.tokens:
            for part, token, weight in entries:
                sums.setdefault((part, token), []).append(weight)
            for key in {(part, token) for part, token, _ in entries}:
                images[key] = images.get(key, 0) + 1
        rows = [
            {"part": part, "token": token, "mean_weight": sum(w) / len(w),
             "occurrences": len(w), "images": images[(part, token)]}
            for (part, token), w in sums.items()
        ]  # fmt: skip
        return sorted(rows, key=lambda r: (-r["mean_weight"], r["part"], r["token"]))

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
        out["top_tokens"] = self.token_table()[: self.top_tokens]
        return out


def summarise(batches: list[dict[str, Any]], scorer, options: Mapping) -> Attention:
    """Join the per-batch masses."""
    if not batches:
        raise ConfigError("attention got no image: the dataset split is empty")
    top = int(options.get("top_tokens", 20))
    if top < 1:
        raise ConfigError(f"analysis.top_tokens={top} must be >= 1")
    tokens = [entries for b in batches for entries in b["tokens"]]
    return Attention(
        image_ids(batches), concat(batches, "mass"), concat(batches, "positions"), tokens, top
    )


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
    rows = result.token_table()
    with open(paths[3], "w", newline="", encoding="utf-8") as f:
        out = csv.DictWriter(f, TOKEN_COLUMNS)
        out.writeheader()
        out.writerows({**r, "mean_weight": f"{r['mean_weight']:.8g}"} for r in rows)
    token_bars(rows[: result.top_tokens], len(result.image_ids)).savefig(paths[4], dpi=120)
    return paths


def token_bars(rows: list[dict[str, Any]], n_images: int):
    """The top entries' mean weights as horizontal bars, highest on top, coloured by part."""
    from matplotlib.figure import Figure

    colours = {"image": "tab:green", "question": "tab:blue", "description": "tab:orange",
               "other": "tab:gray"}  # fmt: skip
    fig = Figure(figsize=(5.5, 1.0 + 0.25 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r["mean_weight"] for r in rows], color=[colours[r["part"]] for r in rows])
    ax.set_yticks(y, [f"{r['token']} ({r['part']})" for r in rows], fontsize=7)
    ax.set_xlabel("attention weight of the answer position (mean over layers and heads)")
    ax.set_title(f"top tokens, mean over {n_images} images", fontsize=9)
    return fig


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
