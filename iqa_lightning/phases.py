"""Phases of a run: which parameter groups train, for how many epochs, with which optimiser.

A run is a :class:`PhasePlan`, a list of :class:`Phase` s run in order (``stage.phases``; Q-Adapt's
progressive tuning is two, arXiv 2504.01655). The plan answers the two questions the module and
the :class:`~iqa_lightning.callbacks.StageSchedule` callback share: which phase an epoch belongs
to (:meth:`PhasePlan.index_for_epoch`) and what optimiser and scheduler a phase trains with
(:meth:`PhasePlan.configure`).

Scheduler contract. ``Phase.scheduler`` is a factory (a Hydra ``_partial_``):

- ``scheduler_interval="step"``: called as ``scheduler(optimizer, num_warmup_steps=W,
  num_training_steps=T)``, with ``T`` the phase's optimiser steps and ``W = warmup_ratio * T``
  (the signature of ``transformers.get_*_schedule_with_warmup``); stepped every optimiser step.
- ``scheduler_interval="epoch"``: called as ``scheduler(optimizer)`` (e.g. a partial of
  ``torch.optim.lr_scheduler.StepLR``); stepped every epoch.

A step scheduler that takes other arguments is wrapped in a small function of that signature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from torch import nn

INTERVALS = ("step", "epoch")


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a run.

    Args:
        name: Short name (``stage1``); its tensors go to ``checkpoints/<name>/``.
        trainable: Parameter group names this phase trains (``prompt``, ``prompter``, ``lora``,
            ``projector``; ``prompt`` also names a feature prompter).
        optimizer: ``param_groups -> Optimizer`` (each group a dict with ``params``, ``name`` and
            maybe ``lr``); None only for a phase that trains nothing (zero-shot scoring).
        epochs: How many epochs; None: until the end of the run.
        scheduler: A learning-rate scheduler factory (module docstring), or None.
        lr: Learning rate per group name, overriding the optimiser's.
        warmup_ratio: Fraction of the phase's steps spent warming up (step schedulers).
        scheduler_interval: ``step`` or ``epoch``.
    """

    name: str
    trainable: tuple[str, ...]
    optimizer: Callable[..., Any] | None = None
    epochs: int | None = None
    scheduler: Callable[..., Any] | None = None
    lr: Mapping[str, float] = dataclasses.field(default_factory=dict)
    warmup_ratio: float = 0.0
    scheduler_interval: str = "epoch"

    def __post_init__(self) -> None:
        if isinstance(self.trainable, str):
            object.__setattr__(self, "trainable", (self.trainable,))
        object.__setattr__(self, "trainable", tuple(str(g) for g in self.trainable))
        object.__setattr__(self, "lr", {str(k): float(v) for k, v in dict(self.lr or {}).items()})
        object.__setattr__(self, "warmup_ratio", float(self.warmup_ratio or 0.0))
        if self.epochs is not None:
            object.__setattr__(self, "epochs", int(self.epochs))
        if self.scheduler_interval not in INTERVALS:
            raise ValueError(
                f"stage.phases[{self.name}].scheduler_interval={self.scheduler_interval!r} "
                f"must be one of {INTERVALS}"
            )
        if self.optimizer is None and self.trainable:
            raise ValueError(
                f"stage.phases[{self.name}] trains {list(self.trainable)}: give it an optimizer"
            )
        if self.optimizer is not None and not callable(self.optimizer):
            raise ValueError(f"stage.phases[{self.name}].optimizer must be a callable factory")

    @classmethod
    def from_config(cls, config: Phase | Mapping[str, Any]) -> Phase:
        """A phase from one ``stage.phases`` entry (a dict or a Hydra ``DictConfig``).

        Raises:
            ValueError: An unknown key or a missing ``name`` / ``trainable``.
        """
        if isinstance(config, Phase):
            return config
        values = {str(k): config[k] for k in config}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        missing = sorted({"name", "trainable"} - set(values))
        if unknown or missing:
            raise ValueError(
                f"stage.phases entry {values.get('name', '?')!r}: unknown keys {unknown}, "
                f"missing keys {missing} (keys: {sorted(known)})"
            )
        if values.get("scheduler_interval") is None:
            values.pop("scheduler_interval", None)
        return cls(**values)

    # Read like the config entry it came from (``phase["name"]``, ``phase.get("epochs")``).
    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def training_steps(self, total_steps: int, max_epochs: int | None) -> int:
        """This phase's share of the run's ``total_steps`` optimiser steps."""
        if self.epochs and max_epochs and max_epochs > 0:
            return max(1, int(total_steps) * self.epochs // int(max_epochs))
        return int(total_steps)

    def optimizer_groups(self, groups: Mapping[str, Mapping[str, nn.Parameter]]) -> list[dict]:
        """Optimiser parameter groups, one per trained group, named, with its own ``lr``."""
        out = []
        for name, params in groups.items():
            group: dict[str, Any] = {"params": list(params.values()), "name": name}
            if name in self.lr:
                group["lr"] = self.lr[name]
            out.append(group)
        return out


class PhasePlan:
    """The phases of a run, in order.

    Args:
        phases: :class:`Phase` s or ``stage.phases`` entries.

    Raises:
        ValueError: No phase.
    """

    def __init__(self, phases: Sequence[Phase | Mapping[str, Any]]) -> None:
        if not phases:
            raise ValueError("stage.phases is empty: nothing to train")
        self.phases = [Phase.from_config(p) for p in phases]

    def __len__(self) -> int:
        return len(self.phases)

    def __iter__(self) -> Iterator[Phase]:
        return iter(self.phases)

    def __getitem__(self, index: int) -> Phase:
        return self.phases[index]

    def index_for_epoch(self, epoch: int) -> int:
        """The phase an epoch belongs to (phases run in order, ``epochs`` each)."""
        start = 0
        for index, phase in enumerate(self.phases):
            if phase.epochs is None or epoch < start + phase.epochs:
                return index
            start += phase.epochs
        return len(self.phases) - 1

    def configure(
        self,
        index: int,
        groups: Mapping[str, Mapping[str, nn.Parameter]],
        total_steps: int | None = None,
        max_epochs: int | None = None,
    ) -> Any:
        """Phase ``index``'s optimiser and scheduler, as ``configure_optimizers`` returns them.

        Args:
            index: The phase.
            groups: The trained groups' parameters by group name, in order.
            total_steps: The run's optimiser steps (``trainer.estimated_stepping_batches``);
                needed by step schedulers only.
            max_epochs: The run's epochs (a fixed-length phase gets its share of the steps).

        Returns:
            The optimiser, or Lightning's ``{"optimizer", "lr_scheduler"}`` dict.
        """
        phase = self.phases[index]
        if phase.optimizer is None:
            raise ValueError(f"stage.phases[{phase.name}] has no optimizer: it trains nothing")
        optimizer = phase.optimizer(phase.optimizer_groups(groups))
        if phase.scheduler is None:
            return optimizer
        if phase.scheduler_interval == "step":
            if total_steps is None:
                raise ValueError(f"phase {phase.name}: a step scheduler needs total_steps")
            steps = phase.training_steps(total_steps, max_epochs)
            scheduler = phase.scheduler(
                optimizer,
                num_warmup_steps=int(phase.warmup_ratio * steps),
                num_training_steps=steps,
            )
        else:
            scheduler = phase.scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": phase.scheduler_interval},
        }


__all__ = ["INTERVALS", "Phase", "PhasePlan"]
