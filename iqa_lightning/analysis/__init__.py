"""Analyses of a finished run's model on a dataset (``python -m iqa_lightning.analyze``).

Each analysis is one module with the same parts:

- ``check(options)``: the options are usable (a :class:`~iqa_lightning.errors.ConfigError` if not);

- ``compute(scorer, pixels, options, batch=None)``: what one batch gives, a dict of CPU tensors
  whose first dimension is the image (run inside ``Trainer.predict``, so the scorer's own forward path is
  used: pixel prompt, feature prompter hook, precision and device of the ``trainer`` preset);
- ``summarise(batches, scorer, options)``: the per-batch outputs (with ``image_id``) -> a result;
- ``write(result, folder)``: the result's files under ``folder``; returns their paths.

:data:`ANALYSES` maps each ``analysis.name`` to its module; :func:`collect` runs ``compute`` over
a loader; :func:`run_analysis` does it all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iqa_lightning.analysis import attention, grounding, instability, logit_lens
from iqa_lightning.analysis.common import (
    AnalysisStep,
    analysis_trainer,
    collect,
    concat,
    image_ids,
)

if TYPE_CHECKING:
    import lightning as L
    import torch

ANALYSES = {
    "logit_lens": logit_lens,
    "instability": instability,
    "attention": attention,
    "grounding": grounding,
}


def run_analysis(
    name: str, trainer: L.Trainer, module: torch.nn.Module, loader, options: Mapping,
    folder: str | Path,
) -> tuple[Any, list[Path]]:  # fmt: skip
    """Run analysis ``name`` over ``loader`` and write its files under ``folder``.

    Returns:
        The result and the written files.
    """
    analysis = ANALYSES[name]
    analysis.check(options)
    batches = collect(trainer, module, loader, analysis.compute, options, what=f"analysis {name}")
    result = analysis.summarise(batches, module.scorer, options)
    return result, analysis.write(result, Path(folder))


__all__ = [
    "ANALYSES",
    "AnalysisStep",
    "analysis_trainer",
    "collect",
    "concat",
    "image_ids",
    "run_analysis",
]
