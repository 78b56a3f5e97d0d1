"""One data module for instruction tuning: conversations, multiple-choice questions, scores.

Q-Adapt (arXiv 2504.01655) tunes on two tasks at once: instruction conversations (overall
quality explanation, attribute-wise perception answering) and, optionally, quality scoring on
an IQA dataset. This module mixes them by steps:

- Training: every step yields ONE task's batch, a dict with ``"task"`` set to ``"instruct"``
  or ``"score"``. The task of each step is drawn from the normalised ``mixture`` weights with
  ``numpy.random.default_rng([seed, epoch])``, so the sequence is the same for every run with
  the same seed, differs between epochs, and is identical on every DDP rank (all ranks run the
  same task at each step). A task whose loader runs out within an epoch starts it again
  (cycles). An epoch has ``steps_per_epoch`` steps; by default the sum of the task loaders'
  lengths.
- Instruct batches: ``pixels`` [B, 3, S, S] in [0, 1], ``turns`` list (per sample) of
  (question, answer) pairs, ``record_id`` list[str], ``task``. Training questions of a Q-Bench
  train file, when given, join them as one-turn conversations answered by the option letter.
- Score batches: the score data module's own training batch dicts (``pixels``, ``target``,
  ``mos_raw``, ``image_id``) plus ``task``.
- Validation / test: a list of loaders, ``dataloader_idx`` i serving task ``eval_tasks[i]``:
  ``"mcq"`` (Q-Bench questions, see :class:`~iqa_lightning.data.instruct.qbench.MCQDataset`) and
  ``"score"`` (the score data module's own val / test loader) when one is given.

The training schedule is :class:`~iqa_lightning.data.instruct.schedule.TaskMixtureLoader`, re-exported
here with :data:`TASKS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ...machine import resolve_workers
from ..base import IQADataModule
from ..dataset import make_loader
from ..records import write_csv
from .conversations import InstructDataset, collate_instruct, read_qinstruct
from .qbench import MCQDataset, collate_mcq, mcq_to_conversation, read_qbench
from .schedule import TASKS, TaskMixtureLoader, check_mixture

__all__ = ["TASKS", "InstructDataModule", "TaskMixtureLoader"]

logger = logging.getLogger("iqa_lightning.data")

QBENCH_SPLIT_FILES = {
    "train": "qbench_train.json",
    "val": "qbench_val.json",
    "test": "qbench_test.json",
}


class InstructDataModule(L.LightningDataModule):
    """Instruction conversations + Q-Bench questions + an optional IQA score data module.

    Args:
        qinstruct_json: Q-Instruct / LLaVA conversation file (training); may be None when a
            Q-Bench train file provides the conversations.
        qbench_dir: Folder with ``qbench_train.json`` (optional), ``qbench_val.json`` and
            ``qbench_test.json`` (optional; the val file serves as test without it).
        qbench_train: Explicit Q-Bench file, overrides ``qbench_dir``; likewise the next two.
        qbench_val: Validation questions.
        qbench_test: Test questions (``llvisionqa_test.json`` with its answers, as Q-Align
            evaluates; without this or ``qbench_dir``'s test file the val questions serve).
        image_root: Folder of the conversations' images; default the folder of
            ``qinstruct_json``.
        qbench_image_root: Folder of the questions' images; default ``image_root`` when given,
            else the folder of each Q-Bench file.
        image_size: Side of the square images fed to the model.
        batch_size: Training batch size of the instruct task.
        eval_batch_size: Batch size of the question loaders; defaults to ``batch_size``.
        num_workers: DataLoader workers of the instruct and question loaders.
        score_datamodule: Any :class:`~iqa_lightning.data.base.IQADataModule` for the score
            task (built by the driver), or None.
        mixture: Task to relative weight per training step, e.g. ``{"instruct": 1, "score":
            1}``; None gives weight 1 to each available task.
        steps_per_epoch: Training steps per epoch; None: the sum of the task loaders' lengths.
        seed: Seed of the task schedule and of the instruct shuffle.
        on_bad_image: ``"error"`` or ``"skip"`` for the conversation and question images.
        name: Name for logs.
        mcq_answer: How the model answers the questions: ``likelihood`` (each option letter's
            next-token logit) or ``generate`` (greedy, the letter matched in the output, as
            Q-Align's eval_qbench_mcq.py:96-129).
        mcq_max_new_tokens: Length limit of a generated answer (Q-Align: 512).
    """

    def __init__(
        self,
        qinstruct_json: str | os.PathLike | None = None,
        qbench_dir: str | os.PathLike | None = None,
        qbench_train: str | os.PathLike | None = None,
        qbench_val: str | os.PathLike | None = None,
        qbench_test: str | os.PathLike | None = None,
        image_root: str | os.PathLike | None = None,
        qbench_image_root: str | os.PathLike | None = None,
        image_size: int = 224,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        score_datamodule: IQADataModule | None = None,
        mixture: Mapping[str, float] | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        on_bad_image: str = "error",
        name: str = "instruct",
        mcq_answer: str = "likelihood",
        mcq_max_new_tokens: int = 512,
    ):
        super().__init__()
        self.qinstruct_json = _path(qinstruct_json)
        self.qbench_dir = _path(qbench_dir)
        files = {"train": qbench_train, "val": qbench_val, "test": qbench_test}
        self.qbench_files = {split: _path(path) for split, path in files.items()}
        self.image_root = _path(image_root)
        self.qbench_image_root = _path(qbench_image_root)
        self.image_size = _count(image_size, "image_size")
        self.batch_size = _count(batch_size, "batch_size")
        eval_batch_size = self.batch_size if eval_batch_size is None else eval_batch_size
        self.eval_batch_size = _count(eval_batch_size, "eval_batch_size")
        self.num_workers = resolve_workers(num_workers, "instruct.num_workers")
        if score_datamodule is not None and not isinstance(score_datamodule, IQADataModule):
            raise TypeError(
                f"score_datamodule must be an IQADataModule, got {type(score_datamodule).__name__}"
            )
        self.score_datamodule = score_datamodule
        self.mixture = None if mixture is None else check_mixture(mixture)
        if self.mixture and self.mixture.get("score", 0) > 0 and score_datamodule is None:
            raise ValueError(
                f"mixture gives the 'score' task weight {self.mixture['score']:g} but no "
                "score_datamodule was passed"
            )
        steps = steps_per_epoch
        self.steps_per_epoch = None if steps is None else _count(steps, "steps_per_epoch")
        self.seed = int(seed)
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        self.on_bad_image = on_bad_image
        self.name = str(name)
        MCQDataset([], 1, mcq_answer, mcq_max_new_tokens)  # checks both settings
        self.mcq_answer = mcq_answer
        self.mcq_max_new_tokens = int(mcq_max_new_tokens)
        self.conversations: list | None = None
        self.questions: dict[str, list] = {}
        self._skipped: list[tuple[str, str, str, str]] = []

    @property
    def eval_tasks(self) -> list[str]:
        """Task of each val / test loader, by ``dataloader_idx``: ``["mcq"]`` + ``["score"]``."""
        tasks = ["mcq"] if self.qbench_file("val") is not None else []
        return tasks + (["score"] if self.score_datamodule is not None else [])

    def qbench_file(self, split: str) -> Path | None:
        """The Q-Bench file used for ``split`` (test falls back to val), or None."""
        path = self.qbench_files[split]
        if path is None and self.qbench_dir is not None:
            candidate = self.qbench_dir / QBENCH_SPLIT_FILES[split]
            path = candidate if split == "val" or candidate.is_file() else None
        if path is None and split == "test":
            return self.qbench_file("val")
        return path

    def prepare_data(self) -> None:
        """Prepare the score data module (e.g. generate its synthetic set)."""
        if self.score_datamodule is not None:
            self.score_datamodule.prepare_data()

    def prepare_records(self) -> dict[str, int]:
        """Read and check everything training needs now, before a model is built (idempotent).

        Runs :meth:`prepare_data` and ``setup("fit")``: the conversations, the validation
        questions and the score data module's records (its ``prepare_records``).

        Returns:
            ``instruct`` (training conversations), ``mcq_val`` (validation questions) and, with
            a score data module, its images per split as ``score_train`` / ``score_val`` /
            ``score_test``.

        Raises:
            InstructFormatError: A conversation or question file is malformed
                (:class:`~.conversations.MissingImageError` for missing images).
            FileNotFoundError, AnnotationError, SplitError, ImageLoadError: From the score data
                module (see :meth:`~iqa_lightning.data.base.IQADataModule.prepare_records`).
        """
        self.prepare_data()
        self.setup("fit")
        counts = {"instruct": len(self.conversations), "mcq_val": len(self.questions["val"])}
        if self.score_datamodule is not None:
            score = self.score_datamodule.prepare_records()
            counts.update({f"score_{split}": n for split, n in score.items()})
        return counts

    def setup(self, stage: str | None = None) -> None:
        """Read what ``stage`` needs (idempotent) and set up the score data module."""
        if stage in (None, "fit") and self.conversations is None:
            self.conversations = self._read_conversations()
        for split, stages in (("val", (None, "fit", "validate")), ("test", (None, "test"))):
            if stage in stages and split not in self.questions:
                self.questions[split] = self._read_questions(split)
        if self.score_datamodule is not None:
            self.score_datamodule.setup(stage)

    def train_dataloader(self) -> TaskMixtureLoader:
        if self.conversations is None:
            raise RuntimeError(f"{self.name}: call setup('fit') before using the data module")
        weights = self.mixture or {
            "instruct": float(bool(self.conversations)),
            "score": float(self.score_datamodule is not None),
        }
        if not any(weight > 0 for weight in weights.values()):
            raise ValueError(f"{self.name}: no training task has data (mixture {weights})")
        loaders, hooks = {}, {}
        rank, world = self._distributed()
        if weights.get("instruct", 0) > 0:
            if not self.conversations:
                raise ValueError(f"{self.name}: the 'instruct' task has no conversations")
            dataset = InstructDataset(self.conversations, self.image_size)
            loaders["instruct"], hooks["instruct"] = self._sharded(
                dataset, self.batch_size, collate_instruct, self.seed, rank, world
            )
        if weights.get("score", 0) > 0:
            loader = self.score_datamodule.train_dataloader()
            if world > 1:
                loader, hooks["score"] = self._sharded(
                    loader.dataset, loader.batch_size, loader.collate_fn,
                    self.score_datamodule.seed, rank, world,
                )  # fmt: skip
            loaders["score"] = loader
        steps = self.steps_per_epoch or sum(len(loader) for loader in loaders.values())
        return TaskMixtureLoader(
            loaders,
            {task: weights[task] for task in loaders},
            steps,
            seed=self.seed,
            epoch_fn=self._current_epoch,
            on_epoch=hooks,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def split_table(self) -> list[tuple[str, str]]:
        """The score data module's (image_id, split) rows; without one, (record_id, split) of
        the conversations (train) and questions (val, test) read so far."""
        if self.score_datamodule is not None:
            return self.score_datamodule.split_table()
        rows = [(c.record_id, "train") for c in self.conversations or []]
        for split in ("val", "test"):
            rows += [(q.record_id, split) for q in self.questions.get(split, [])]
        return rows

    def write_split(self, path: str | os.PathLike) -> Path:
        """Write the split table as CSV (the score data module's ``split.csv`` when present)."""
        if self.score_datamodule is not None:
            return self.score_datamodule.write_split(path)
        return write_csv(path, "split.csv", ("record_id", "split"), self.split_table())

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every skipped conversation, question and score image."""
        rows = [(path, reason) for _, _, path, reason in self._skipped]
        return rows + (self.score_datamodule.skipped if self.score_datamodule else [])

    def write_skipped(self, path: str | os.PathLike) -> Path:
        """Write skipped records as CSV: task, id, path, reason."""
        rows = list(self._skipped)
        if self.score_datamodule is not None:
            rows += [("score", Path(p).name, p, why) for p, why in self.score_datamodule.skipped]
        return write_csv(path, "skipped.csv", ("task", "id", "path", "reason"), rows)

    def _read_conversations(self) -> list:
        conversations = []
        if self.qinstruct_json is not None:
            root = self.image_root or self.qinstruct_json.parent
            records = read_qinstruct(self.qinstruct_json, root, self.on_bad_image)
            self._skipped += [("instruct", *row) for row in records.skipped]
            conversations += records
        train = self.qbench_file("train")
        if train is not None:
            records = read_qbench(train, self._qbench_root(train), self.on_bad_image)
            self._skipped += [("mcq_train", *row) for row in records.skipped]
            conversations += [mcq_to_conversation(mcq) for mcq in records]
        logger.info("%s: %d training conversations", self.name, len(conversations))
        return conversations

    def _read_questions(self, split: str) -> list:
        path = self.qbench_file(split)
        if path is None:
            return []
        if split == "test" and path == self.qbench_file("val") and "val" in self.questions:
            return self.questions["val"]
        records = read_qbench(path, self._qbench_root(path), self.on_bad_image)
        self._skipped += [(f"mcq_{split}", *row) for row in records.skipped]
        return list(records)

    def _qbench_root(self, path: Path) -> Path:
        return self.qbench_image_root or self.image_root or path.parent

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        loaders = []
        if self.qbench_file("val") is not None:
            if split not in self.questions:
                raise RuntimeError(f"{self.name}: call setup() before the {split} loaders")
            if not self.questions[split]:
                raise ValueError(f"{self.name}: no {split} questions in {self.qbench_file(split)}")
            loaders.append(
                DataLoader(
                    MCQDataset(
                        self.questions[split], self.image_size, self.mcq_answer,
                        self.mcq_max_new_tokens,
                    ),  # fmt: skip
                    batch_size=self.eval_batch_size,
                    shuffle=False,
                    collate_fn=collate_mcq,
                    num_workers=self.num_workers,
                    pin_memory=torch.cuda.is_available(),
                )
            )
        if self.score_datamodule is not None:
            score = self.score_datamodule
            loaders.append(score.val_dataloader() if split == "val" else score.test_dataloader())
        return loaders

    def _sharded(self, dataset, batch_size, collate_fn, seed, rank, world):
        if world > 1:
            sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=int(seed))
            hook = sampler.set_epoch
            options = {"sampler": sampler}
        else:
            generator = torch.Generator()

            def hook(epoch: int) -> None:
                generator.manual_seed(int(seed) * 1_000_003 + int(epoch))

            options = {"shuffle": True, "generator": generator}
        return make_loader(dataset, batch_size, self.num_workers, collate_fn, **options), hook

    def _distributed(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (int(trainer.global_rank), int(trainer.world_size))

    def _current_epoch(self) -> int | None:
        return None if self.trainer is None else int(self.trainer.current_epoch)


def _path(value) -> Path | None:
    return None if value is None else Path(os.path.expanduser(str(value)))


def _count(value, key: str, minimum: int = 1) -> int:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and int(value) == value
    if not ok or int(value) < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)
