"""The build layer: one composition root from a config to the parts of a run (data, module,
Trainer, loggers, callbacks). Training, evaluation, scoring, analysis and the Python API all
build through here; the method a config names (:mod:`iqa_lightning.methods`) builds the module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from iqa_lightning.hub import check_model_available, preset_choice
from iqa_lightning.methods import method_of
from iqa_lightning.quantization import applied as quantization_applied
from iqa_lightning.quantization import trainer_options as quantization_trainer_options

#: The Hydra config folder of every driver.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def sweep_job() -> dict[str, Any] | None:
    """The multirun job this process runs: sweep folder name, job number, its overrides.

    Returns None for a single run (or outside Hydra).
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    overrides = {}
    for item in hc.overrides.task:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    return {"sweep": Path(str(hc.sweep.dir)).name, "num": int(hc.job.num), "overrides": overrides}


def _tag(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."  # W&B's limit on a tag


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate every logger of the ``logger`` group and give each the composed config.

    In a multirun, a W&B run joins the group named after the sweep folder, and carries the
    job's overrides as tags (``prompt=padding``) and as config keys (``sweep.prompt``), so the
    W&B table groups the runs of one sweep by any swept value.
    """
    job = sweep_job()
    specs = (cfg.get("logger") or {}).get("loggers") or {}
    loggers = []
    for spec in specs.values():
        if spec is None:
            continue
        extra = {}
        resumed = resumed_run_folder()  # a resumed run goes on in its own W&B run
        if resumed is not None and str(spec.get("_target_", "")).endswith("WandbLogger"):
            from iqa_lightning.resume import wandb_run_id

            run_id = wandb_run_id(resumed)
            if run_id is not None:  # the same W&B run goes on
                extra = {"id": run_id, "resume": "allow"}
        if job is not None and str(spec.get("_target_", "")).endswith("WandbLogger"):
            tags = list(spec.get("tags") or [])
            tags += [_tag(f"{k}={v}") for k, v in job["overrides"].items()]
            extra = {"tags": list(dict.fromkeys(tags))}
            if spec.get("group") is None:
                extra["group"] = job["sweep"]
        loggers.append(instantiate(spec, **extra))
    config = OmegaConf.to_container(cfg, resolve=True)
    if job is not None:
        config["sweep"] = {"name": job["sweep"], "job": job["num"], **job["overrides"]}
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def build_callbacks(cfg: DictConfig) -> list:
    specs = cfg.get("callbacks") or {}
    return [instantiate(spec) for spec in specs.values() if spec is not None]


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list):
    """The Trainer of ``cfg.trainer``; ``bf16-true`` / ``16-true`` keep the labels in fp32.

    Args:
        cfg: A train config.
        callbacks: Callback instances.
        loggers: Logger instances.
    """
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import FSDPStrategy

    from iqa_lightning.precision import HALF_TRUE, label_safe_precision

    extra = {}
    precision = cfg.trainer.get("precision")
    if precision in HALF_TRUE:
        strategy = cfg.trainer.get("strategy") or "auto"
        if not isinstance(strategy, str):
            strategy = instantiate(strategy)
        fsdp = isinstance(strategy, FSDPStrategy) or strategy == "fsdp"
        plugins = [instantiate(p) for p in cfg.trainer.get("plugins") or []]
        plugins.append(label_safe_precision(precision, fsdp))
        extra = {"precision": None, "plugins": plugins, "strategy": strategy}
    extra.update(quantization_trainer_options(OmegaConf.select(cfg, "model.quantization")))
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, **extra)


def build_module(cfg: DictConfig, run: Path | None = None, datamodule=None):
    """The run's LightningModule, built by its method (``method.name``: :mod:`iqa_lightning.methods`).

    Args:
        cfg: A train config.
        run: A finished run folder to rebuild from its saved files (nothing is trained or
            prepared again).
        datamodule: The run's data, set up, for methods that prepare from it (a distilled scorer).
    """
    check_model_available(cfg.model, preset_choice("model"))
    # model.quantization (scoring, eval): the backbone's checkpoint loads with integer weights
    with quantization_applied(cfg, rebuilt=run is not None) as cfg:
        return method_of(cfg).build_module(cfg, run=run, datamodule=datamodule)


def prepare_run(cfg: DictConfig, datamodule, out: Path) -> list[Path]:
    """The method's preparation steps of a new run (:meth:`Method.prepare`), on its data,
    before :func:`build_module`; returns their artefacts in the run folder."""
    return method_of(cfg).prepare(cfg, datamodule, out)


def build_datamodule(cfg: DictConfig):
    """The score DataModule, wrapped in the instruction mixture when the stage needs it."""
    datamodule = instantiate(cfg.dataset)
    tasks = OmegaConf.select(cfg, "method.tasks", default=None) or cfg.stage.get("tasks")
    if "instruct" in (tasks or ["score"]):  # the method's tasks, else the stage's
        datamodule = instantiate(cfg.instruct, score_datamodule=datamodule)
    return datamodule


def resumed_run_folder() -> Path | None:
    """The run folder this process resumes (``python train.py resume=<run>``), else None."""
    from iqa_lightning.resume import RESUME_ENV

    value = os.environ.get(RESUME_ENV)
    return Path(value) if value else None
