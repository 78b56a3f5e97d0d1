"""The teacher LMM of RALI distillation (arXiv 2510.11369): what it says about each image.

A teacher is a model preset (a backbone config such as ``conf/model/tiny_llava.yaml``) or a
finished ``train.py`` run folder (its backbone with its tuned prompt / LoRA / prompter). It
answers one question per image, greedily (``Backbone.generate``; the run's ``scorer.generate``),
in batches; :func:`generate_texts` appends each batch's answers to a
:class:`~iqa_lightning.distill.texts.TextCache`, so an interrupted run resumes where it stopped,
and logs its progress (images done, rate, ETA) at most every 30 s
(:class:`~iqa_lightning.progress.Progress`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from iqa_lightning.data.dataset import IQAImageDataset, LabelledImage, make_loader
from iqa_lightning.distill.texts import TextCache
from iqa_lightning.progress import Progress

log = logging.getLogger(__name__)

__all__ = ["QUESTION", "Teacher", "build_teacher", "generate_texts"]

#: The default instruction: a description of the quality, then a rating (reasoning-style text).
QUESTION = (
    "Describe the quality of this image: its sharpness, noise, colour, exposure and artefacts, "
    "then rate its overall quality."
)


@dataclass
class Teacher:
    """A teacher that can answer questions about images.

    Attributes:
        answer: ``(pixels [B, 3, R, R] in [0, 1], questions) -> texts``.
        image_size: The side ``R`` its pixels need.
        description: What it is (a preset target or a run folder), for provenance.
    """

    answer: Callable[[torch.Tensor, list[str]], list[str]]
    image_size: int
    description: str


def build_teacher(
    model: Any = None, run: str | None = None, max_new_tokens: int = 128, device: str = "cpu"
) -> Teacher:
    """A teacher from a model preset config or a finished run folder (exactly one).

    Args:
        model: A backbone config (``_target_`` and its arguments, ``image_size`` among them).
        run: A ``train.py`` run folder of an LMM.
        max_new_tokens: Length limit of each answer.
        device: Where the teacher runs (``cpu``, ``cuda``).

    Raises:
        ValueError: Neither or both given.
    """
    if (model is None) == (not run):
        raise ValueError("teacher: give exactly one of teacher.model (a preset) or teacher.run")
    if run:
        from iqa_lightning.runs import load_run_config, rebuild_run

        run_cfg = load_run_config(run)
        module = rebuild_run(run, run_cfg).to(device)
        scorer = module.scorer

        def answer(pixels, questions):
            return scorer.generate(pixels.to(device), questions, max_new_tokens)

        return Teacher(answer, int(run_cfg.model.image_size), f"run {run}")
    from hydra.utils import instantiate

    backbone = instantiate(model).to(device).eval()

    def answer(pixels, questions):
        return backbone.generate(pixels.to(device), questions, max_new_tokens)

    return Teacher(answer, int(model["image_size"]), str(model.get("_target_", "model")))


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
        question: The instruction asked of every image.
        batch_size: Images per generation batch.
        resize: How images become the teacher's square input (``squash``, ``short_side_crop``).
        num_workers: DataLoader processes decoding images.

    Returns:
        ``{image_id: text}`` of every item.
    """
    todo = [item for item in items if item.image_id not in cache]
    if todo:
        log.info(
            "teacher %s: %d of %d images to describe (%d cached in %s)",
            teacher.description, len(todo), len(items), len(items) - len(todo), cache.path,
        )  # fmt: skip
        dataset = IQAImageDataset(todo, teacher.image_size, hflip=False, resize=resize)
        with Progress("teacher texts", total=len(todo), unit="images", logger=log) as progress:
            for batch in make_loader(dataset, batch_size, num_workers, shuffle=False):
                ids = list(batch["image_id"])
                answers = teacher.answer(batch["pixels"], [question] * len(ids))
                cache.add({i: a.strip() for i, a in zip(ids, answers, strict=True)})
                progress.update(len(ids))
    return {item.image_id: cache.texts[item.image_id] for item in items}
