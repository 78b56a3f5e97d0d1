"""Training driver: build every part from the Hydra config, fit, test the best checkpoint, and
write the run folder (``metrics.json``, ``predictions_test.csv``, ``split.csv``, ``checkpoints/``,
``plots/``).

    python train.py experiment=demo
    python train.py prompt=padding dataset=koniq stage=2 dataset.root=/data/koniq10k
    python train.py -m experiment=demo prompt=padding,patch_center prompt.size=10,30
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from iqa_lightning.cli import report_user_errors

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

log = logging.getLogger("iqa_lightning")


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate every logger of the ``logger`` group and give each the composed config."""
    from hydra.utils import instantiate

    specs = (cfg.get("logger") or {}).get("loggers") or {}
    loggers = [instantiate(spec) for spec in specs.values() if spec is not None]
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def build_callbacks(cfg: DictConfig) -> list:
    from hydra.utils import instantiate

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
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, **extra)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def stage_one_from(run: str | Path) -> tuple[dict, dict]:
    """LoRA settings and tuned tensors of a finished run, for ``stage.init_from``."""
    from safetensors.torch import load_file

    run = Path(run).expanduser()
    config_file, tensors_file = (
        run / ".hydra" / "config.yaml",
        run / "checkpoints" / "tuned.safetensors",
    )
    for path in (config_file, tensors_file):
        if not path.exists():
            raise FileNotFoundError(f"stage.init_from={str(run)!r}: no {path.relative_to(run)}")
    run_cfg = OmegaConf.load(config_file)
    lora = OmegaConf.to_container(run_cfg.stage.lora) if run_cfg.stage.get("lora") else None
    return lora, load_file(str(tensors_file))


def build_module(cfg: DictConfig, run: Path | None = None):
    """Backbone, prompt, score head and module from the config.

    Args:
        cfg: A train config.
        run: A finished run folder to rebuild: its ``checkpoints/lora.json`` gives the LoRA
            settings and ``stage.init_from`` is not read again (``tuned.safetensors`` holds all).
    """
    from hydra.utils import instantiate

    parts = {
        "backbone": instantiate(cfg.model),
        "prompt": instantiate(cfg.prompt),
        "score": instantiate(cfg.score),
    }
    if run is not None:
        lora_file = run / "checkpoints" / "lora.json"
        lora = json.loads(lora_file.read_text()) if lora_file.exists() else None
        return instantiate(cfg.module, **parts, lora=lora)
    init_from = cfg.stage.get("init_from")
    if not init_from:
        return instantiate(cfg.module, **parts)
    lora, tensors = stage_one_from(init_from)
    module = instantiate(cfg.module, **parts, lora=lora)
    module.load_tuned(tensors, strict=False)
    log.info("stage.init_from: loaded %d tensors from %s", len(tensors), init_from)
    return module


def build_datamodule(cfg: DictConfig):
    """The score DataModule, wrapped in the instruction mixture when the stage needs it."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.dataset)
    if "instruct" in (cfg.stage.get("tasks") or ["score"]):
        datamodule = instantiate(cfg.instruct, score_datamodule=datamodule)
    return datamodule


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint and fill the run folder.

    Args:
        cfg: The composed config (see ``conf/train.yaml``).

    Returns:
        The final metrics, as written to ``metrics.json``.
    """
    import lightning as L

    from iqa_lightning.callbacks.stages import save_tensors
    from iqa_lightning.strategies import full_parameters

    # The backbone stays in eval mode on purpose (frozen, no dropout).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r"Metric `\w+` will save all targets")
    # Lightning prints through its own handler as well; let Hydra's logging alone show its lines.
    logging.getLogger("lightning.pytorch").handlers.clear()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info("building model <%s>", cfg.model._target_)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    log.info(
        "trainable parameters: %d in groups %s", module.num_trainable(), module.trainable_groups
    )

    trainer = build_trainer(cfg, callbacks=build_callbacks(cfg), loggers=build_loggers(cfg))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    if trainer.is_global_zero:
        datamodule.write_split(out / "split.csv")
        if datamodule.skipped:
            datamodule.write_skipped(out / "skipped_images.csv")

    metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics = _finite(metrics)

    with full_parameters(trainer):
        trainable, tuned = module.trainable_state_dict(), module.tuned_state_dict()
    if trainer.is_global_zero:
        phase = module.phase["name"]
        save_tensors(trainable, out / "checkpoints" / phase / "trainable.safetensors")
        save_tensors(tuned, out / "checkpoints" / "tuned.safetensors")
        if module.lora_config:
            (out / "checkpoints" / "lora.json").write_text(json.dumps(module.lora_config) + "\n")
        summary = {
            **metrics,
            "trainable_parameters": module.num_trainable(),
            "best_checkpoint": os.path.relpath(best, out) if best else None,
            "epochs": trainer.current_epoch,
        }
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        figures = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None)
        print(f"\nrun folder: {out}\n{figures}", flush=True)
    for logger in trainer.loggers:
        logger.finalize("success")
    _finish_wandb()
    return metrics


def _finish_wandb() -> None:
    """Close the W&B run so the next multirun job starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


NUMERIC_GROUPS = ("stage",)


def quote_numeric_choices(args: list[str], groups: tuple[str, ...] = NUMERIC_GROUPS) -> list[str]:
    """Quote numeric config-group choices (``stage=2`` -> ``stage='2'``).

    Hydra parses ``stage=2`` as the integer 2 and refuses it as a group choice; the option files
    are ``conf/stage/1.yaml``, ``2.yaml``, so the choice is quoted before Hydra reads it.
    """
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in groups:
            choices = value.split(",")
            if all(c.isdigit() for c in choices):
                arg = f"{key}=" + ",".join(f"'{c}'" for c in choices)
        out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("val/srcc_best")


def main() -> None:
    """Entry point of ``python train.py``; returns val/srcc_best to sweepers that optimise it."""
    import sys

    sys.argv[1:] = quote_numeric_choices(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
