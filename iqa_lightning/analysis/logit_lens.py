"""Logit lens: what each decoder layer would answer at the score position.

    python -m iqa_lightning.analyze run=<run folder> analysis=logit_lens [analysis.top_k=4]

Each image goes through the run's scoring path exactly as scoring does (the pixel prompt, or the
feature prompter's hook on the vision features conditioned on the score question, then the
backbone on the score prompt). At the answer position, the output of every decoder layer
``l = 1 .. L`` is decoded through the final norm and the LM head
(:meth:`~iqa_lightning.models.backbones.Backbone.layer_logits`; layer ``L`` is the model's own
next-token logits, which the score head reads). Per layer and image:

- ``probability`` of each level word of the run's score head: its entry of the softmax over the
  full vocabulary;
- ``renormalised`` probability: the softmax over the level words' logits only (what
  :class:`~iqa_lightning.models.score.WordScore` computes; at layer ``L`` it is the score head's
  own distribution);
- the ``top_k`` most probable tokens of the full-vocabulary softmax.

Written under ``<run>/analysis/``:

- ``logit_lens.csv``: ``layer, word, mean_probability, mean_renormalised_probability`` (means over
  the images);
- ``logit_lens_top.csv``: ``layer, rank, token, token_id, mean_probability``: the ``top_k`` tokens
  of the dataset-mean full-vocabulary distribution of each layer;
- ``logit_lens_examples.csv``: for the first ``analysis.examples`` images, one row per layer with
  its ``top_k`` tokens and their probabilities (``token_1, probability_1, ...``);
- ``logit_lens.png``: heatmaps layer x level word of both mean probabilities.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqa_lightning.analysis import describing
from iqa_lightning.analysis.attention import run_prompts
from iqa_lightning.analysis.common import concat, image_ids
from iqa_lightning.errors import ConfigError

FILES = ("logit_lens.csv", "logit_lens_top.csv", "logit_lens_examples.csv", "logit_lens.png")


def layer_logits(
    scorer, pixels: torch.Tensor, batch: Mapping | None = None, options: Mapping | None = None
) -> torch.Tensor:
    """``[layers, B, vocab]`` fp32 logit-lens logits of what the run reads at the answer.

    The same path as the scorer's (prompt, the prompter's feature hook conditioned on the score
    question, the score prompt's ids), read from every layer; the last row equals
    ``scorer.logits(pixels)``. A described run (perception-then-inference) reads its inference
    prompt after each image's description, as :func:`.attention.run_prompts` builds it.
    """
    if describing.is_described(scorer):
        image, ids, mask, _, instructions = run_prompts(scorer, pixels, batch, options or {})
        device = pixels.device
        with scorer.features(list(instructions)):
            return scorer.backbone.layer_logits(image, ids.to(device), mask.to(device))
    with scorer.features([scorer.word_head.question] * pixels.shape[0]):
        ids = scorer.input_ids.to(pixels.device)
        return scorer.backbone.layer_logits(scorer.prompt(pixels), ids)


def check(options: Mapping) -> None:
    """Check the options before any image is read (``analysis.top_k``)."""
    _top_k(options)


def _top_k(options: Mapping) -> int:
    k = int(options.get("top_k", 4))
    if k < 1:
        raise ConfigError(f"analysis.top_k={k} must be a positive integer")
    return k


def compute(scorer, pixels: torch.Tensor, options: Mapping, batch=None) -> dict[str, torch.Tensor]:
    """One batch: ``probability`` / ``renormalised`` ``[B, layers, words]``, ``top_ids`` /
    ``top_probs`` ``[B, layers, top_k]`` and ``prob_sum`` ``[1, layers, vocab]`` (the batch's
    sum of the full-vocabulary distributions)."""
    k = _top_k(options)
    logits = layer_logits(scorer, pixels, batch, options)
    with torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        probs = torch.softmax(logits, dim=-1)
        ids = scorer.word_head.token_ids.to(logits.device)
        level = probs.index_select(-1, ids)
        renorm = torch.softmax(logits.index_select(-1, ids), dim=-1)
        top_probs, top_ids = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return {
        "probability": level.transpose(0, 1),
        "renormalised": renorm.transpose(0, 1),
        "top_ids": top_ids.transpose(0, 1),
        "top_probs": top_probs.transpose(0, 1),
        "prob_sum": probs.sum(dim=1, keepdim=True).transpose(0, 1),
    }


@dataclass
class LogitLens:
    """The summary of :func:`summarise`.

    Attributes:
        words: The score head's level words.
        image_ids: The images, in loader order.
        probability: ``[layers, words]`` mean full-vocabulary probability of each level word.
        renormalised: ``[layers, words]`` mean probability renormalised over the level words.
        top: Per layer, ``(token, token_id, mean probability)`` of the ``top_k`` tokens of the
            mean distribution.
        examples: Per example image ``(image_id, [per layer [(token, probability), ...]])``.
    """

    words: list[str]
    image_ids: list[str]
    probability: torch.Tensor
    renormalised: torch.Tensor
    top: list[list[tuple[str, int, float]]]
    examples: list[tuple[str, list[list[tuple[str, float]]]]]

    @property
    def layers(self) -> int:
        return int(self.probability.shape[0])


def token_text(tokenizer, token_id: int) -> str:
    """How a token reads: decoded, or its raw piece when it decodes to nothing or to part of
    a character (a byte token)."""
    text = tokenizer.decode([int(token_id)])
    if text.strip() and "\ufffd" not in text:
        return text
    return repr(tokenizer.convert_ids_to_tokens(int(token_id)))


def summarise(batches: list[dict[str, Any]], scorer, options: Mapping) -> LogitLens:
    """Means over the images, the mean distribution's top tokens, and the examples."""
    if not batches:
        raise ConfigError("the logit lens got no image: the dataset split is empty")
    k = _top_k(options)
    tokenizer = scorer.backbone.tokenizer
    ids = image_ids(batches)
    probability = concat(batches, "probability").double()
    renormalised = concat(batches, "renormalised").double()
    mean_dist = concat(batches, "prob_sum").double().sum(0) / len(ids)
    top_probs, top_ids = mean_dist.topk(min(k, mean_dist.shape[-1]), dim=-1)
    top = [
        [(token_text(tokenizer, t), int(t), float(p)) for t, p in zip(ti, tp, strict=True)]
        for ti, tp in zip(top_ids, top_probs, strict=True)
    ]
    n_examples = max(0, int(options.get("examples", 4)))
    ex_ids, ex_probs = concat(batches, "top_ids"), concat(batches, "top_probs")
    examples = [
        (
            ids[i],
            [
                [(token_text(tokenizer, t), float(p)) for t, p in zip(ti, tp, strict=True)]
                for ti, tp in zip(ex_ids[i], ex_probs[i], strict=True)
            ],
        )
        for i in range(min(n_examples, len(ids)))
    ]
    return LogitLens(
        words=list(scorer.word_head.words),
        image_ids=ids,
        probability=probability.mean(0).float(),
        renormalised=renormalised.mean(0).float(),
        top=top,
        examples=examples,
    )


def write(result: LogitLens, folder: Path) -> list[Path]:
    """Write the four files (see the module docstring) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FILES]
    with open(paths[0], "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["layer", "word", "mean_probability", "mean_renormalised_probability"])
        for layer in range(result.layers):
            for w, word in enumerate(result.words):
                out.writerow([layer + 1, word, f"{float(result.probability[layer, w]):.8g}",
                              f"{float(result.renormalised[layer, w]):.8g}"])  # fmt: skip
    with open(paths[1], "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["layer", "rank", "token", "token_id", "mean_probability"])
        for layer, tokens in enumerate(result.top):
            for rank, (text, token_id, p) in enumerate(tokens):
                out.writerow([layer + 1, rank + 1, text, token_id, f"{p:.8g}"])
    with open(paths[2], "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        k = max((len(t) for _, layers in result.examples for t in layers), default=0)
        out.writerow(["image_id", "layer", *[f"{c}_{r + 1}" for r in range(k)
                                              for c in ("token", "probability")]])  # fmt: skip
        for image_id, layers in result.examples:
            for layer, tokens in enumerate(layers):
                cells = [c for text, p in tokens for c in (text, f"{p:.6g}")]
                out.writerow([image_id, layer + 1, *cells])
    heatmap(result).savefig(paths[3], dpi=120)
    return paths


def heatmap(result: LogitLens):
    """Layers (rows, 1 at the bottom) x level words: mean full-vocabulary and renormalised
    probabilities side by side."""
    from matplotlib.figure import Figure

    words = len(result.words)
    fig = Figure(figsize=(2.0 + 1.4 * words, 1.5 + 0.3 * result.layers), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (
        (result.probability, "P(word) over the vocabulary"),
        (result.renormalised, "P(word) over the level words"),
    )
    for ax, (values, title) in zip(axes, panels, strict=True):
        image = ax.imshow(values.numpy(), aspect="auto", origin="lower", cmap="viridis",
                          vmin=0.0, vmax=max(float(values.max()), 1e-12))  # fmt: skip
        ax.set_xticks(range(words), result.words, rotation=45, ha="right")
        ax.set_yticks(range(result.layers), [str(i + 1) for i in range(result.layers)])
        ax.set_xlabel("level word")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"logit lens, mean over {len(result.image_ids)} images", fontsize=10)
    return fig
