"""Training driver: build every part from the Hydra config, fit, test the best checkpoint, and
write the run folder (``metrics.json``, ``predictions_test.csv``, ``split.csv``, ``checkpoints/``,
``plots/``).

    python train.py experiment=demo
    python train.py prompt=padding dataset=koniq stage=2 dataset.root=/data/koniq10k
    python train.py -m experiment=smoke prompt=padding,patch_center prompt.size=10,30
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from iqa_lightning.build import (  # noqa: F401  (re-exported: the build layer's names)
    CONFIG_DIR,
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    prepare_run,
    resumed_run_folder,
    sweep_job,
)
from iqa_lightning.cli import report_user_errors
from iqa_lightning.errors import ConfigError
from iqa_lightning.phases import by_name, numbered_overrides, phase_entries
from iqa_lightning.quiet import quiet
from iqa_lightning.run_folder import RunFolder
from iqa_lightning.run_names import RESOLVER  # noqa: F401  (registers ${iqa_run_label:...})

log = logging.getLogger("iqa_lightning")


def _finite(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def check_config(cfg: DictConfig) -> None:
    """Refuse config values that would give a run that trains nothing, before anything is built.

    Raises:
        ConfigError: ``trainer.max_epochs`` below 1 (``-1``, Lightning's "no limit", only with
            ``trainer.max_steps``), or a ``stage.phases`` schedule whose fixed-length phases use
            up every epoch, so that a later phase never trains.
    """
    from iqa_lightning.config_checks import check_numbers
    from iqa_lightning.hub import check_model_available, preset_choice

    check_loss(cfg)
    check_numbers(cfg)
    check_trainer_keys(cfg)
    check_model_available(cfg.get("model") or {}, preset_choice("model"))
    trainer = cfg.get("trainer") or {}
    if trainer.get("fast_dev_run"):
        return
    max_epochs = trainer.get("max_epochs")
    max_steps = trainer.get("max_steps")
    if max_epochs is not None:
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int):
            raise ConfigError(f"trainer.max_epochs must be an integer, got {max_epochs!r}")
        unlimited = max_epochs == -1 and max_steps is not None and int(max_steps) > 0
        if max_epochs < 1 and not unlimited:
            raise ConfigError(
                f"trainer.max_epochs={max_epochs}: the run would test an untrained model; "
                "set trainer.max_epochs to 1 or more (or use eval.py to test without training)"
            )
    phases = OmegaConf.select(cfg, "module.phases", default=None)  # the method's schedule
    if phases is None:
        phases = (cfg.get("stage") or {}).get("phases")
    phases = phase_entries(phases)
    if max_epochs is None or max_epochs < 1 or len(phases) < 2:
        return
    start = 0
    for index, phase in enumerate(phases[:-1]):
        if phase.get("epochs") is None:
            break
        start += int(phase["epochs"])
        if start >= max_epochs:
            later = [str(p.get("name", i)) for i, p in enumerate(phases) if i > index]
            raise ConfigError(
                f"trainer.max_epochs={max_epochs}: the phases before {', '.join(later)} take "
                f"{start} epoch(s) (stage.phases.<name>.epochs), so {', '.join(later)} would never "
                f"train; set trainer.max_epochs above {start}"
            )


def check_trainer_keys(cfg: DictConfig) -> None:
    """Every ``trainer.*`` key is a ``lightning.Trainer`` argument (``+trainer.max_epoch=1``
    would otherwise fail inside the Trainer, after the data and the model were built).

    Raises:
        ConfigError: Naming the key and the closest argument.
    """
    import difflib
    import inspect

    from lightning import Trainer

    accepted = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for key in (cfg.get("trainer") or {}).keys():
        if str(key).startswith("_") or key in accepted:
            continue
        close = difflib.get_close_matches(str(key), sorted(accepted), n=1)
        hint = f"; did you mean trainer.{close[0]}?" if close else ""
        raise ConfigError(f"trainer.{key} is not an argument of lightning.Trainer{hint}")


def check_loss(cfg: DictConfig) -> None:
    """Refuse ``module.loss=level_ce|soft_label`` with a score head that is not 5 level words
    best first (``score=qalign``), before the model is loaded.

    Raises:
        ConfigError: Naming the loss and the score head's words.
    """
    loss = OmegaConf.select(cfg, "module.loss", default=None)
    score = cfg.get("score") or {}
    if loss not in ("level_ce", "soft_label") or "words" not in score:
        return
    from iqa_lightning.models.levels import check_level_words

    try:
        check_level_words(loss, list(score.words), list(score.weights), score.get("name", "?"))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_data(datamodule) -> None:
    """Read and check the records (folders, annotation files, labels, splits) now, before a
    model, a logger or a Trainer is built; a data error is then the first and only thing the
    user sees."""
    counts = datamodule.prepare_records()
    log.info("data checked: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))


def train(cfg: DictConfig) -> dict[str, float]:
    """Check the config and the data, fit, test the best checkpoint and fill the run folder.

    Args:
        cfg: The composed config (see ``conf/train.yaml``).

    Returns:
        The final metrics, as written to ``metrics.json``.

    Raises:
        ConfigError: A config value the run cannot use (see :func:`check_config`).
    """
    check_config(cfg)  # before the heavy imports: a config error comes back at once

    import lightning as L

    from iqa_lightning.callbacks.stages import save_tensors
    from iqa_lightning.strategies import full_parameters
    from iqa_lightning.zero_shot import comparison_table

    quiet()  # each Lightning line once, no tips or known library noise, the figures printed last
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = RunFolder(out)
    prepare_csv_history(cfg, out)

    from iqa_lightning.machine import share_machine

    log.debug("torch threads: %d", share_machine(cfg))
    # The data is read and checked next; nothing heavy (model, W&B run, Trainer) exists before
    # the config and the data passed their checks.
    datamodule = build_datamodule(cfg)
    check_data(datamodule)

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    prepare_run(cfg, datamodule, out)  # the method's own steps before its module is built
    log.info("building model <%s>", cfg.model._target_)
    module = build_module(cfg, datamodule=datamodule)
    log.info(
        "trainable parameters: %d in groups %s", module.num_trainable(), module.trainable_groups
    )

    zero_shot = {}
    if cfg.get("zero_shot") and cfg.get("test") and not cfg.get("ckpt_path"):
        zero_shot = run_zero_shot(cfg, module, datamodule, out)
    started = time.perf_counter()
    trainer = build_trainer(cfg, callbacks=build_callbacks(cfg), loggers=build_loggers(cfg))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    if trainer.is_global_zero:
        datamodule.write_split(files.split)
        if datamodule.skipped:
            datamodule.write_skipped(files.skipped)

    metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if cfg.get("test"):
        trainer.test(
            module, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False
        )
        tested = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if trainer.is_global_zero:
            print(metrics_table(_finite(tested), title="test"), flush=True)
        metrics.update(tested)
    metrics = _finite({**metrics, **zero_shot})
    wall_time = time.perf_counter() - started

    with full_parameters(trainer):
        trainable, tuned = module.trainable_state_dict(), module.tuned_state_dict()
    if trainer.is_global_zero:
        phase = module.phase["name"]
        save_tensors(trainable, files.trainable(phase))
        save_tensors(tuned, files.tuned)
        if module.lora_config:
            files.lora.write_text(json.dumps(module.lora_config) + "\n")
        summary = {
            **metrics,
            "method": cfg.get("task_name"),
            "trainable_parameters": module.num_trainable(),
            "wall_time_s": round(wall_time, 2),
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "best_checkpoint": os.path.relpath(best, out) if best else None,
            "epochs": trainer.current_epoch,
        }
        files.metrics.write_text(json.dumps(summary, indent=2) + "\n")
        figures = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None)
        print(f"\nrun folder: {out}\n{figures}", flush=True)
        if zero_shot and "test/srcc" in metrics:
            print(comparison_table(metrics), flush=True)
    for logger in trainer.loggers:
        logger.finalize("success")
    _finish_wandb()
    return metrics


def prepare_csv_history(cfg: DictConfig, out: Path) -> None:
    """A resumed run: check its config against the saved one and keep ``csv/metrics.csv``'s
    epochs up to the checkpoint (the CSV logger appends the rest); a new run starts the file
    afresh."""
    from iqa_lightning.resume import check_resumed_config, checkpoint_epoch, trim_metrics

    metrics_csv = out / "csv" / "metrics.csv"
    resumed = resumed_run_folder()
    if resumed is None or Path(resumed).resolve() != out.resolve():
        metrics_csv.unlink(missing_ok=True)
        return
    check_resumed_config(cfg, out)
    epoch = checkpoint_epoch(Path(cfg.ckpt_path))
    dropped = trim_metrics(metrics_csv, epoch)
    log.info(
        "resuming %s from epoch %d (%s)%s", out, epoch, cfg.ckpt_path,
        f"; {dropped} metrics.csv row(s) after it dropped" if dropped else "",
    )  # fmt: skip


def run_zero_shot(cfg: DictConfig, module, datamodule, out: Path) -> dict[str, float]:
    """Score the test split with the untrained module (its own Trainer, no logger, no
    callbacks but the row collector): the zero-shot baseline of :mod:`iqa_lightning.zero_shot`.
    Single-process runs only: a second Trainer would launch its DDP processes anew."""
    from iqa_lightning.scorer import RowCollector
    from iqa_lightning.zero_shot import score_zero_shot

    strategy = str(cfg.trainer.get("strategy") or "").lower()
    if (
        "ddp" in strategy
        or "fsdp" in strategy
        or str(cfg.trainer.get("devices")) not in ("1", "None", "auto")
    ):
        log.info(
            "zero_shot: skipped under trainer.strategy=%s (single-process runs only)", strategy
        )
        return {}
    trainer = build_trainer(cfg, callbacks=[RowCollector()], loggers=[])
    return score_zero_shot(trainer, module, datamodule, out if trainer.is_global_zero else None)


def peak_memory_mb() -> float:
    """Peak memory of this process in MiB: the CUDA allocator's peak on a GPU, else the peak
    resident set size."""
    import resource
    import sys

    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def metrics_table(metrics: dict[str, float | None], title: str = "test") -> str:
    """The figures of one evaluation as a two-column text table, names in full.

    Lightning's own table gives every dataloader a column; with several test loaders (score
    and instruction data in ``stage=progressive``) the epoch-level figures are repeated in
    each, and a narrow terminal cuts the names.
    """
    rows = [(k, "nan" if v is None else f"{v:.4f}") for k, v in sorted(metrics.items())]
    if not rows:
        return f"{title}: no figures"
    width = max(len(k) for k, _ in rows + [(f"{title} metric", "")])
    lines = [f"{title + ' metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


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
    with failed_run_ending(cfg):
        metrics = train(cfg)
    return metrics.get("val/srcc_best")


@contextlib.contextmanager
def failed_run_ending(cfg: DictConfig):
    """How a run that fails or is interrupted (Ctrl-C) ends.

    - interrupted after a checkpoint: the folder stays and the resume command is printed;
    - a single run that wrote nothing worth keeping (no checkpoint, no ``metrics.json``): its
      folder is removed and its log (with the traceback) moves to ``outputs/failed/``
      (:func:`iqa_lightning.resume.discard_stub`). Sweep jobs and resumed runs keep theirs.
    """
    import signal
    import sys

    from iqa_lightning.resume import discard_stub, resume_command

    out = Path(cfg.paths.output_dir)
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(True)
        signal.default_int_handler(signum, frame)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    except BaseException:
        if interrupted or isinstance(sys.exc_info()[1], KeyboardInterrupt):
            if RunFolder(out).last.is_file():
                print(
                    f"\ninterrupted; the run folder is kept: {out}\n"
                    f"resume with: {resume_command(out)}", file=sys.stderr, flush=True,
                )  # fmt: skip
            else:
                print("\ninterrupted before the first checkpoint: nothing to resume",
                      file=sys.stderr, flush=True)  # fmt: skip
        rank = int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))
        if sweep_job() is None and resumed_run_folder() is None and rank == 0:
            moved = discard_stub(out, Path(cfg.paths.log_dir) / "failed")
            if moved is not None:
                log.debug("nothing worth keeping in %s: removed; its log is %s", out, moved)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def phases_by_name(args: list[str]) -> list[str]:
    """``args`` with a phase named by its position (``stage.phases.0.epochs=1``, the form of
    run folders written before phases were keyed by name) naming it
    (:func:`~iqa_lightning.phases.by_name`; the config is composed without those overrides to
    learn the names)."""
    numbered = numbered_overrides(args)
    if not numbered:
        return args
    from hydra import compose, initialize_config_dir

    others = [a for a in args if a not in numbered and not a.startswith("-")]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=others)
    return by_name(args, lambda node: list(OmegaConf.select(cfg, node) or {}))


def main() -> None:
    """Entry point of ``python train.py``; returns val/srcc_best to sweepers that optimise it."""
    import sys

    from iqa_lightning import hydra_entry
    from iqa_lightning.cli import error_line
    from iqa_lightning.resume import RESUME_ENV, resume_args, resumed_run

    args = quote_numeric_choices(sys.argv[1:])
    try:
        sys.argv[1:] = resume_args(args)
    except ConfigError as err:
        print(error_line(err), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    try:
        sys.argv[1:] = phases_by_name(sys.argv[1:])
    except ValueError as err:
        print(error_line(ConfigError(str(err))), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    run = resumed_run(args) if sys.argv[1:] != args else None
    if run is not None:
        os.environ[RESUME_ENV] = str(run.resolve())  # DDP processes inherit it
    elif "LOCAL_RANK" not in os.environ:
        os.environ.pop(RESUME_ENV, None)
    with hydra_entry.reported():
        _hydra_main()


if __name__ == "__main__":
    main()
