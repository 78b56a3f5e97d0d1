"""Read run folders back: metrics, overrides and predictions of one run or a whole sweep, and the
trained model itself.

A run folder is what ``train.py`` writes (``.hydra/``, ``metrics.json``,
``predictions_test.csv``, ``split.csv``, ``checkpoints/``, ``plots/``); a sweep folder holds one
run folder per job. Used by the analysis notebook, by the evaluation and scoring drivers
(:func:`rebuild_run`) and by tests of the run-folder contract.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iqa_lightning.run_folder import RunFolder

RUN_CONFIG = RunFolder.CONFIG
TUNED = RunFolder.TUNED


@dataclass
class Run:
    """One finished run, loaded from its folder."""

    path: Path
    metrics: dict
    overrides: list[str] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The command-line overrides that make this run differ (or the folder name)."""
        return " ".join(self.overrides) or self.path.name

    @property
    def prompt_image(self) -> Path | None:
        path = RunFolder(self.path).plots / "prompt.png"
        return path if path.exists() else None


def find_runs(folder: str | Path) -> list[Path]:
    """Run folders under ``folder``: itself if it is one, else every sub-folder that is.

    Raises:
        FileNotFoundError: No ``metrics.json`` at or below ``folder``.
    """
    folder = Path(folder)
    if RunFolder(folder).finished:
        return [folder]
    runs = sorted(p.parent for p in folder.glob(f"**/{RunFolder.METRICS}"))
    if not runs:
        raise FileNotFoundError(f"{folder}: no run folder (metrics.json) at or below it")
    return runs


def _cell(column: str, value: str) -> Any:
    """A ``predictions_test.csv`` cell: numbers as floats; ``image_id`` and a scorer's text
    extras (a generated answer, an explanation) as they are."""
    if column == "image_id":
        return value
    try:
        return float(value)
    except ValueError:
        return value


def load_run(folder: str | Path) -> Run:
    """Load ``metrics.json``, ``.hydra/overrides.yaml`` and ``predictions_test.csv``."""
    folder = Path(folder)
    files = RunFolder(folder)
    metrics = json.loads(files.metrics.read_text())
    overrides_file = files.overrides
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    predictions = []
    pred_file = files.predictions
    if pred_file.exists():
        with open(pred_file, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                predictions.append({k: _cell(k, v) for k, v in row.items()})
    return Run(folder, metrics, list(overrides or []), predictions)


def load_runs(folder: str | Path) -> list[Run]:
    """Every run at or below ``folder`` (a run folder or a sweep folder)."""
    return [load_run(p) for p in find_runs(folder)]


def metrics_table(runs: list[Run], keys: tuple[str, ...] = ("test/srcc", "test/plcc",
                  "test/krcc", "val/srcc_best")) -> str:  # fmt: skip
    """A markdown table, one row per run, one column per metric key."""
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for run in runs:
        cells = []
        for key in keys:
            value = run.metrics.get(key)
            cells.append("n/a" if value is None else f"{value:.4f}")
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_folder(run: str | Path | None) -> Path:
    """``run`` as an absolute path to a train.py run folder.

    Raises:
        FileNotFoundError: ``run`` is empty, missing, or not a folder with ``.hydra/config.yaml``.
    """
    if run is None or not str(run).strip():
        raise FileNotFoundError("run=<run folder> is required: the train.py run folder")
    path = Path(str(run)).expanduser().resolve()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"run={run}: {what}; give a train.py run folder")
    if not (path / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"run={run}: no .hydra/config.yaml; is it a train.py run folder?")
    return path


def load_run_config(run: str | Path):
    """The composed config (an OmegaConf ``DictConfig``) a run was trained with."""
    from omegaconf import OmegaConf

    return OmegaConf.load(run_folder(run) / RUN_CONFIG)


def rebuild_run(run: str | Path, run_cfg=None):
    """The run's LightningModule, rebuilt from its config, with its tuned tensors loaded.

    Args:
        run: A finished train.py run folder.
        run_cfg: Its config, when already loaded (:func:`load_run_config`).

    Returns:
        The :class:`~iqa_lightning.module.IQAModule` in eval mode.

    Raises:
        FileNotFoundError: The folder lacks ``.hydra/config.yaml`` or
            ``checkpoints/tuned.safetensors`` (the run did not finish).
    """
    from safetensors.torch import load_file

    from iqa_lightning.build import build_module

    run = run_folder(run)
    weights = run / TUNED
    if not weights.is_file():
        raise FileNotFoundError(f"run={run}: no {TUNED.as_posix()}; did the run finish?")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors' SafetensorError: a truncated or damaged file
        raise ValueError(
            f"run={run}: cannot read {TUNED.as_posix()} ({err}); the file is damaged or was cut "
            "short (copy it again, or train the run again)"
        ) from None
    run_cfg = load_run_config(run) if run_cfg is None else run_cfg
    module = build_module(run_cfg, run=run)
    module.load_tuned(tensors)
    return module.eval()


@contextmanager
def resumed_wandb_run(run: str | Path, run_cfg: Any) -> Iterator[Any]:
    """The run's own W&B run, resumed by id (offline as the run was), or ``None`` when the run
    did not log to W&B; for drivers that add results to a finished run (eval, analyses).

    Args:
        run: The run folder.
        run_cfg: Its config (:func:`load_run_config`).
    """
    from omegaconf import OmegaConf

    run = Path(run)
    wandb_cfg = ((run_cfg.get("logger") or {}).get("loggers") or {}).get("wandb")
    folders = sorted((run / "wandb").glob("*run-*")) if (run / "wandb").exists() else []
    if wandb_cfg is None or not folders:
        yield None
        return
    import wandb

    run_id = folders[-1].name.rsplit("-", 1)[-1]
    offline = bool(OmegaConf.select(run_cfg, "logger.offline", default=True))
    with wandb.init(
        project=wandb_cfg.get("project"), id=run_id, resume="allow", dir=str(run),
        mode="offline" if offline else "online",
    ) as wb:  # fmt: skip
        yield wb
