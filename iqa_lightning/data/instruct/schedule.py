"""The task schedule of multi-task training: which task's batch each training step gets.

Each step yields ONE task's batch, a dict with ``"task"`` set. The task of each step is drawn
from the normalised weights with ``numpy.random.default_rng([seed, epoch])``, so the sequence
is the same for every run with the same seed, differs between epochs, and is identical on every
DDP rank. A task whose loader runs out within an epoch starts it again (cycles).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

__all__ = ["TASKS", "TaskMixtureLoader", "check_mixture"]

TASKS = ("instruct", "score")


class TaskMixtureLoader:
    """Iterates training steps, each yielding one task's batch with a ``"task"`` key.

    Args:
        loaders: Task name to a re-iterable loader of dict batches.
        weights: Task name to a relative sampling weight (> 0) for every task in ``loaders``.
        steps: Steps per epoch.
        seed: Seed of the task schedule.
        epoch_fn: Returns the current epoch (or None); without one, each ``iter()`` counts one
            epoch.
        on_epoch: Task name to a callable ``f(epoch)`` run before an epoch (re-seeding a
            sampler), so the data order depends only on the seed and the epoch.
    """

    def __init__(
        self,
        loaders: Mapping[str, Iterable],
        weights: Mapping[str, float],
        steps: int,
        seed: int = 0,
        epoch_fn: Callable[[], int | None] | None = None,
        on_epoch: Mapping[str, Callable[[int], None]] | None = None,
    ):
        if set(loaders) != set(weights) or not loaders:
            raise ValueError(f"loaders {sorted(loaders)} and weights {sorted(weights)} differ")
        self.loaders = dict(loaders)
        self.tasks = sorted(self.loaders)
        total = float(sum(weights[task] for task in self.tasks))
        self.probabilities = [float(weights[task]) / total for task in self.tasks]
        self.steps = int(steps)
        self.seed = int(seed)
        self.epoch_fn = epoch_fn
        self.on_epoch = dict(on_epoch or {})
        self._next_epoch = 0

    def __len__(self) -> int:
        return self.steps

    def schedule(self, epoch: int) -> list[str]:
        """The task of every step of ``epoch``."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        picks = rng.choice(len(self.tasks), size=self.steps, p=self.probabilities)
        return [self.tasks[i] for i in picks]

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        if epoch is None:
            epoch = self._next_epoch
        self._next_epoch = epoch + 1
        for hook in self.on_epoch.values():
            hook(epoch)
        iterators: dict = {}
        for task in self.schedule(epoch):
            batch = self._next(task, iterators)
            if not isinstance(batch, Mapping):
                raise TypeError(f"the '{task}' loader must yield dict batches, got {type(batch)}")
            yield {**batch, "task": task}

    def _next(self, task: str, iterators: dict):
        for _ in range(2):
            if task not in iterators:
                iterators[task] = iter(self.loaders[task])
            try:
                return next(iterators[task])
            except StopIteration:
                del iterators[task]
        raise RuntimeError(f"the '{task}' training loader yields no batches")


def check_mixture(mixture: Mapping[str, float]) -> dict[str, float]:
    """The task weights of ``mixture`` as ``{task: float}``, checked (known tasks, weights
    >= 0, one > 0)."""
    weights = {str(task): weight for task, weight in dict(mixture).items()}
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        raise ValueError(f"mixture has unknown task(s) {unknown}; tasks are {list(TASKS)}")
    for task, weight in weights.items():
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not number or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"mixture weight of '{task}' must be a number >= 0, got {weight!r}")
    if sum(weights.values()) <= 0:
        raise ValueError(f"mixture weights must not all be zero, got {weights}")
    return {task: float(weight) for task, weight in weights.items()}
