"""The layout of a run folder, in one place: every driver, method and callback asks a
:class:`RunFolder` where a file of the run lives instead of spelling the path itself.

A run folder (``outputs/<date>/<time>_<name>/``, or a sweep job's folder)::

    .hydra/config.yaml, overrides.yaml, hydra.yaml   the composed config, the overrides given
    train.log                                        the run's log (tracebacks included)
    metrics.json                                     final figures (written last: a finished run)
    predictions_test.csv                             one row per test image
    split.csv, skipped_images.csv                    the split used, images skipped as unreadable
    checkpoints/last.ckpt, epoch=*.ckpt              Lightning checkpoints (tuned tensors only)
    checkpoints/tuned.safetensors, lora.json         what the run tuned, its LoRA settings
    checkpoints/<phase>/trainable.safetensors        each phase's trained tensors at its end
    scorer/                                          an exported scorer (RALI)
    distill/                                         a method's prepared artefacts (RALI)
    csv/metrics.csv, wandb/, plots/                  loggers' and plots' files
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunFolder"]


@dataclass(frozen=True)
class RunFolder:
    """A run folder's paths (module docstring).

    Args:
        path: The folder (it need not exist yet).
    """

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path).expanduser())

    # The names, relative to the folder (for globbing and messages).
    CONFIG = Path(".hydra") / "config.yaml"
    OVERRIDES = Path(".hydra") / "overrides.yaml"
    HYDRA = Path(".hydra") / "hydra.yaml"
    CHECKPOINTS = Path("checkpoints")
    LAST = CHECKPOINTS / "last.ckpt"
    TUNED = CHECKPOINTS / "tuned.safetensors"
    LORA = CHECKPOINTS / "lora.json"
    METRICS = Path("metrics.json")
    PREDICTIONS = Path("predictions_test.csv")
    SPLIT = Path("split.csv")
    SKIPPED = Path("skipped_images.csv")
    SCORER = Path("scorer")
    DISTILL = Path("distill")
    PLOTS = Path("plots")

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def overrides(self) -> Path:
        return self.path / self.OVERRIDES

    @property
    def hydra(self) -> Path:
        return self.path / self.HYDRA

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    @property
    def tuned(self) -> Path:
        return self.path / self.TUNED

    @property
    def lora(self) -> Path:
        return self.path / self.LORA

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def split(self) -> Path:
        return self.path / self.SPLIT

    @property
    def skipped(self) -> Path:
        return self.path / self.SKIPPED

    @property
    def scorer(self) -> Path:
        return self.path / self.SCORER

    @property
    def distill(self) -> Path:
        return self.path / self.DISTILL

    @property
    def plots(self) -> Path:
        return self.path / self.PLOTS

    def trainable(self, phase: str) -> Path:
        """``checkpoints/<phase>/trainable.safetensors``: a phase's trained tensors."""
        return self.checkpoints / phase / "trainable.safetensors"

    @property
    def finished(self) -> bool:
        """Whether the run wrote its final figures (``metrics.json``)."""
        return self.metrics.is_file()
