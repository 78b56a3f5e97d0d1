"""Phases of a run: which parameter groups train, for how many epochs, with which optimiser.

A run is a :class:`PhasePlan`, a list of :class:`Phase` s run in order (``stage.phases``; Q-Adapt's
progressive tuning is two, arXiv 2504.01655). In the config, ``stage.phases`` maps each phase's
name to its settings, in the order they run, so an option or an override changes one phase
without restating the others (``stage.phases.stage1.epochs=3``; ``~stage.phases.stage2`` or
``stage.phases.stage2=null`` drops one); a list of entries with a ``name`` each (run folders
written before) means the same (:func:`phase_entries`). The plan answers the two questions
the module and the :class:`~iqa_lightning.callbacks.StageSchedule` callback share: which phase
an epoch belongs to (:meth:`PhasePlan.index_for_epoch`) and what optimiser and scheduler a
phase trains with (:meth:`PhasePlan.configure`).

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
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from torch import nn

INTERVALS = ("step", "epoch")
#: ``stage.phases.0.epochs=1``: a phase by its position (the list form's overrides).
NUMBERED = re.compile(
    r"^(?P<op>[+~]*)(?P<node>(?:stage|module|method)\.phases)\.(?P<index>\d+)(?P<rest>[.=].*|)$"
)

log = logging.getLogger(__name__)


def phase_entries(phases: Any) -> list[Any]:
    """``stage.phases`` as a list of entries, in order: a mapping ``{name: settings}`` (the
    config's form; a ``None`` entry is a dropped phase) or a list of entries with ``name`` each.

    Raises:
        ValueError: A mapping entry whose ``name`` differs from its key, or one that is not a
            mapping.
    """
    if phases is None:
        return []
    if not isinstance(phases, Mapping) and not hasattr(phases, "items"):
        return list(phases)
    entries = []
    for key, settings in phases.items():
        if settings is None:
            continue
        if isinstance(settings, Phase):
            entries.append(settings)
            continue
        if not hasattr(settings, "items"):
            raise ValueError(
                f"stage.phases.{key} must be a mapping of its settings, got {settings!r}"
            )
        named = settings.get("name", key)
        if str(named) != str(key):
            raise ValueError(f"stage.phases.{key} has name {named!r}; the key is its name")
        entries.append({**{str(k): v for k, v in settings.items()}, "name": str(key)})
    return entries


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


def as_named(container: Any) -> Any:
    """A plain config container with every ``phases`` list of named entries (run folders
    written before phases were keyed by name) as the mapping ``{name: settings}``."""
    if isinstance(container, dict):
        out = {}
        for key, value in container.items():
            named = isinstance(value, list) and value and all(
                isinstance(v, dict) and "name" in v for v in value
            )
            if key == "phases" and named:
                value = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in value}
            out[key] = as_named(value)
        return out
    if isinstance(container, list):
        return [as_named(v) for v in container]
    return container


def numbered_overrides(args: Sequence[str]) -> list[str]:
    """The overrides of ``args`` that name a phase by its position (``stage.phases.0...``)."""
    return [a for a in args if NUMBERED.match(a)]


def by_name(args: Sequence[str], names: Callable[[str], Sequence[str]]) -> list[str]:
    """``args`` with ``<node>.phases.<i>...`` overrides naming the phase instead
    (``stage.phases.0.epochs=1`` -> ``stage.phases.stage1.epochs=1``), each change logged as a
    deprecation: phases are keyed by name since the config holds them as a mapping.

    Args:
        args: Command-line overrides.
        names: ``node -> phase names in order`` (``stage.phases``, ``module.phases``, ...) of
            the config the other overrides compose.

    Raises:
        ValueError: A position past the last phase.
    """
    out = []
    for arg in args:
        match = NUMBERED.match(arg)
        if match is None:
            out.append(arg)
            continue
        node, index = match["node"], int(match["index"])
        known = list(names(node))
        if index >= len(known):
            raise ValueError(f"{arg}: {node} has {len(known)} phase(s): {known}")
        named = f"{match['op']}{node}.{known[index]}{match['rest']}"
        log.warning("%s names a phase by its position; phases are keyed by name: %s", arg, named)
        out.append(named)
    return out


class PhasePlan:
    """The phases of a run, in order.

    Args:
        phases: :class:`Phase` s or ``stage.phases`` entries, or ``stage.phases`` as a mapping of
            name -> settings (:func:`phase_entries`).

    Raises:
        ValueError: No phase, or two with one name.
    """

    def __init__(self, phases: Sequence[Phase | Mapping[str, Any]] | Mapping[str, Any]) -> None:
        entries = phase_entries(phases)
        if not entries:
            raise ValueError("stage.phases is empty: nothing to train")
        self.phases = [Phase.from_config(p) for p in entries]
        names = [p.name for p in self.phases]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stage.phases: phase name(s) {repeated} used twice")

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


__all__ = [
    "INTERVALS",
    "Phase",
    "PhasePlan",
    "as_named",
    "by_name",
    "numbered_overrides",
    "phase_entries",
]
