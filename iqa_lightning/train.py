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


def _finite(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def write_trainable(module, path: Path) -> Path:
    """Save the trainable tensors by name with safetensors (never a frozen backbone weight)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(module.trainable_state_dict(), str(path))
    return path


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint and fill the run folder.

    Args:
        cfg: The composed config (see ``conf/train.yaml``).

    Returns:
        The final metrics, as written to ``metrics.json``.
    """
    import lightning as L
    from hydra.utils import instantiate

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
    backbone = instantiate(cfg.model)
    prompt = instantiate(cfg.prompt)
    score = instantiate(cfg.score)
    module = instantiate(cfg.module, backbone=backbone, prompt=prompt, score=score)
    datamodule = instantiate(cfg.dataset)
    log.info(
        "trainable parameters: %d in groups %s", module.num_trainable(), module.trainable_groups
    )

    trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg))
    trainer.fit(module, datamodule=datamodule)
    if trainer.is_global_zero:
        datamodule.write_split(out / "split.csv")
        if datamodule.skipped:
            datamodule.write_skipped(out / "skipped_images.csv")

    metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=False)
        metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics = _finite(metrics)

    if trainer.is_global_zero:
        stage = cfg.stage.get("name", "stage")
        write_trainable(module, out / "checkpoints" / stage / "trainable.safetensors")
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
