"""How a run is named: its folder and its W&B run, from what was composed.

    python train.py prompt=padding dataset=koniq stage=2
        outputs/runs/2026-12-06_13-29-33_stage2_llava_1_5_7b_padding_koniq   (W&B: stage2_llava_...)
    python train.py experiment=demo
        outputs/runs/2026-12-06_13-29-33_demo_stage1_tiny_llava_trained_learning

The label is the task name (left out when it is the default, ``train``; an experiment sets its
own, e.g. ``demo``), then the choices of the ``stage`` (``stage1``, ``stage2``, or the option's
name: ``progressive``), ``model``, ``prompt`` and ``dataset`` groups, each left out when null or
``none``. The time comes first in the folder name, so folders sort by when they were started.
A multirun's jobs keep their job numbers as folders; each job's W&B run has its own label.

Resolver ``${iqa_run_label:${task_name}}`` (``conf/hydra/default.yaml``,
``conf/logger/wandb.yaml``), registered when this module is imported (:mod:`iqa_lightning.train`
imports it). Outside a Hydra run (no choices to read) the label is the task name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from omegaconf import OmegaConf

__all__ = ["DEFAULT_TASK", "LABEL_GROUPS", "RESOLVER", "current_label", "run_label"]

LABEL_GROUPS = ("method", "stage", "model", "prompt", "dataset")
#: The default method is left out of labels (so is a method its stage already names: rali).
DEFAULT_METHOD = "word_score"
DEFAULT_TASK = "train"
RESOLVER = "iqa_run_label"


def _part(group: str, choice: str) -> str:
    part = f"stage{choice}" if group == "stage" and choice.isdigit() else choice
    return re.sub(r"[^\w.-]+", "-", part).strip("-")


def run_label(task_name: str | None, choices: Mapping[str, str | None]) -> str:
    """The label of a run: task name (unless ``train``), then the method (unless the default
    or named by the stage), stage, model, prompt and dataset choices (null and ``none`` left
    out), joined with ``_``.

    Args:
        task_name: The config's ``task_name``.
        choices: Group -> chosen option (Hydra's ``hydra.runtime.choices``).
    """
    parts = [] if task_name in (None, "", DEFAULT_TASK) else [_part("task", str(task_name))]
    for group in LABEL_GROUPS:
        choice = choices.get(group)
        if group == "method" and (
            choice == DEFAULT_METHOD or str(choices.get("stage") or "").startswith(str(choice))
        ):
            continue
        if choice is not None and str(choice) not in ("", "none", "null"):
            parts.append(_part(group, str(choice)))
    return "_".join(p for p in parts if p) or DEFAULT_TASK


def current_label(task_name: str | None) -> str:
    """:func:`run_label` with the choices of the Hydra run in progress (none outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except ValueError:  # no Hydra run: HydraConfig was not set
        choices = {}
    return run_label(task_name, dict(choices or {}))


OmegaConf.register_new_resolver(RESOLVER, current_label, replace=True)
