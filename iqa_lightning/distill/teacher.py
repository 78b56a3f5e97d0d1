"""The teacher LMM of RALI distillation (arXiv 2510.11369): what it says about each image.

A teacher is a model preset (a backbone config such as ``conf/model/tiny_llava.yaml``) or a
finished ``train.py`` run folder (its backbone with its tuned prompt / LoRA / prompter). It
answers one question per image, greedily (``Backbone.generate``; the run's ``scorer.generate``),
or, given ``generation`` (``teacher.generation``: prompt, sampling and parser), as a
reasoning model is read (:class:`~iqa_lightning.models.generation.GenerativeScorer`: Q-Insight's
system prompt, rating question and sampling for ``teacher=q_insight``, at the image's own size
on a native-resolution checkpoint). Such a teacher's texts are parsed for their score: a text
without one is kept (RALI embeds the text, not the score) and counted, and
:func:`generate_texts` reports the count in the log and in ``<cache>.parse.json``.
In batches, :func:`generate_texts` appends each batch's answers to a
:class:`~iqa_lightning.distill.texts.TextCache`, so an interrupted run resumes where it stopped,
and logs its progress (images done, rate, ETA) at most every 30 s
(:class:`~iqa_lightning.progress.Progress`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from iqa_lightning.data.dataset import IQAImageDataset, LabelledImage, make_loader
from iqa_lightning.data.images import load_rgb
from iqa_lightning.distill.texts import TextCache
from iqa_lightning.errors import ConfigError
from iqa_lightning.progress import Progress

log = logging.getLogger(__name__)

__all__ = ["QUESTION", "Teacher", "build_teacher", "generate_texts", "parse_report"]

#: The default instruction: a description of the quality, then a rating (reasoning-style text).
QUESTION = (
    "Describe the quality of this image: its sharpness, noise, colour, exposure and artefacts, "
    "then rate its overall quality."
)


@dataclass
class Teacher:
    """A teacher that can answer questions about images.

    Attributes:
        answer: ``(pixels [B, 3, R, R] in [0, 1], questions) -> texts``; a ``native`` teacher
            gets a list of ``[3, H, W]`` images in [0, 1] at their own sizes instead.
        image_size: The side ``R`` its pixels need.
        description: What it is (a preset target or a run folder), for provenance.
        parse: ``text -> score or None`` (None: no parsable score) for a teacher asked for a
            rating; None: its texts carry no score to check.
        native: Its images go at their own sizes (a native-resolution checkpoint).
    """

    answer: Callable[[Any, list[str]], list[str]]
    image_size: int
    description: str
    parse: Callable[[str], float | None] | None = None
    native: bool = False


def build_teacher(
    model: Any = None,
    run: str | None = None,
    max_new_tokens: int = 128,
    device: str = "cpu",
    generation: Mapping[str, Any] | None = None,
) -> Teacher:
    """A teacher from a model preset config or a finished run folder (exactly one).

    Args:
        model: A backbone config (``_target_`` and its arguments, ``image_size`` among them).
        run: A ``train.py`` run folder of an LMM.
        max_new_tokens: Length limit of each greedy answer (without ``generation``).
        device: Where the teacher runs (``cpu``, ``cuda``).
        generation: ``{prompt, sampling, parser}`` of
            :class:`~iqa_lightning.models.generation.GenerativeScorer` (``teacher.generation``):
            the model answers its own prompt with that sampling, and its texts are parsed for
            a score. None: the greedy answer to the question :func:`generate_texts` asks.

    Raises:
        ValueError: Neither or both of ``model`` and ``run`` given.
        ConfigError: ``generation`` with a run folder (a run answers through its own scorer).
    """
    if (model is None) == (not run):
        raise ValueError("teacher: give exactly one of teacher.model (a preset) or teacher.run")
    if run:
        if generation:
            raise ConfigError(
                "teacher.generation is for a teacher.model preset; teacher.run answers "
                "teacher.question through the run's own scorer (set teacher.generation=null)"
            )
        from iqa_lightning.runs import load_run_config, rebuild_run

        run_cfg = load_run_config(run)
        module = rebuild_run(run, run_cfg).to(device)
        scorer = module.scorer

        def answer(pixels, questions):
            return scorer.generate(pixels.to(device), questions, max_new_tokens)

        return Teacher(answer, int(run_cfg.model.image_size), f"run {run}")
    from hydra.utils import instantiate

    backbone = instantiate(model).to(device).eval()
    description = str(model.get("pretrained") or model.get("_target_", "model"))
    if generation:
        return _generative_teacher(backbone, generation, int(model["image_size"]), description)

    def answer(pixels, questions):
        return backbone.generate(pixels.to(device), questions, max_new_tokens)

    return Teacher(answer, int(model["image_size"]), description)


def _generative_teacher(
    backbone, generation: Mapping[str, Any], image_size: int, description: str
) -> Teacher:
    from iqa_lightning.models.generation import GenerativeScorer

    unknown = set(generation) - {"prompt", "sampling", "parser"}
    if unknown or "prompt" not in generation:
        raise ConfigError(
            f"teacher.generation takes prompt, sampling and parser (prompt required); "
            f"got {sorted(generation)}"
        )
    settings = {k: dict(generation.get(k) or {}) for k in ("prompt", "sampling", "parser")}
    scorer = GenerativeScorer(
        backbone, None, settings["prompt"], settings["sampling"], settings["parser"]
    ).eval()
    device = scorer._device()
    native = scorer.native is not None

    def answer(images, questions):
        if native:
            batch = {"images": [image.to(device) for image in images]}
        else:
            batch = {"pixels": images.to(device)}
        return scorer.generate_texts(batch, 1)

    return Teacher(answer, image_size, description, lambda t: scorer.parser.parse(t).score, native)


class _OwnSizeImages(Dataset):
    """Images at their own sizes, ``[3, H, W]`` float in [0, 1] (a native-resolution teacher)."""

    def __init__(self, items: Sequence[LabelledImage]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        array = np.asarray(load_rgb(item.path), dtype=np.float32) / 255.0
        return {"image_id": item.image_id, "image": torch.from_numpy(array).permute(2, 0, 1)}


def _collate_own_size(samples: list[dict]) -> dict:
    return {"image_id": [s["image_id"] for s in samples], "pixels": [s["image"] for s in samples]}


def parse_report(teacher: Teacher, texts: Mapping[str, str]) -> dict[str, Any] | None:
    """How many texts carry a parsable score (None for a teacher asked for none).

    Returns:
        ``{"texts", "parsed", "failed", "failed_ids"}``.
    """
    if teacher.parse is None:
        return None
    failed = [image_id for image_id, text in texts.items() if teacher.parse(text) is None]
    return {"texts": len(texts), "parsed": len(texts) - len(failed), "failed": len(failed),
            "failed_ids": failed}  # fmt: skip


@torch.no_grad()
def generate_texts(
    teacher: Teacher,
    items: Sequence[LabelledImage],
    cache: TextCache,
    question: str = QUESTION,
    batch_size: int = 8,
    resize: str = "squash",
    num_workers: int = 0,
) -> dict[str, str]:
    """The teacher's answer for every image, generating only those not cached yet.

    Args:
        teacher: The teacher.
        items: The images (their ids key the cache).
        cache: Where answers are appended, one flush per batch.
        question: The instruction asked of every image (a teacher built with ``generation``
            asks its own prompt instead).
        batch_size: Images per generation batch.
        resize: How images become the teacher's square input (``squash``, ``short_side_crop``).
        num_workers: DataLoader processes decoding images.

    Returns:
        ``{image_id: text}`` of every item. For a teacher asked for a rating, the texts without
        a parsable score are counted (:func:`parse_report`) in the log and in
        ``<cache>.parse.json``, and kept.
    """
    todo = [item for item in items if item.image_id not in cache]
    if todo:
        log.info(
            "teacher %s: %d of %d images to describe (%d cached in %s)",
            teacher.description, len(todo), len(items), len(items) - len(todo), cache.path,
        )  # fmt: skip
        if teacher.native:
            dataset, collate = _OwnSizeImages(todo), _collate_own_size
        else:
            dataset = IQAImageDataset(todo, teacher.image_size, hflip=False, resize=resize)
            collate = None
        options = {"collate_fn": collate} if collate else {}
        with Progress("teacher texts", total=len(todo), unit="images", logger=log) as progress:
            for batch in make_loader(dataset, batch_size, num_workers, shuffle=False, **options):
                ids = list(batch["image_id"])
                answers = teacher.answer(batch["pixels"], [question] * len(ids))
                cache.add({i: a.strip() for i, a in zip(ids, answers, strict=True)})
                progress.update(len(ids))
    texts = {item.image_id: cache.texts[item.image_id] for item in items}
    report = parse_report(teacher, texts)
    if report is not None:
        path = cache.path.with_name(cache.path.name + ".parse.json")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, path)
        if report["failed"]:
            log.warning(
                "teacher %s: %d of %d texts have no parsable score (kept: RALI embeds the "
                "text; first: %s); every id in %s",
                teacher.description, report["failed"], report["texts"],
                ", ".join(report["failed_ids"][:3]), path,
            )  # fmt: skip
        else:
            log.info("teacher %s: every one of %d texts has a parsable score",
                     teacher.description, report["texts"])  # fmt: skip
    return texts
