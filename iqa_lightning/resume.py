"""Resume a run from its folder alone: ``python train.py resume=<run folder>``.

The run's own overrides (``.hydra/overrides.yaml``) are composed again, into the same folder,
from its ``checkpoints/last.ckpt``:

- ``.hydra/`` is never rewritten (``hydra.output_subdir=null``), and the composed config must
  equal the run's ``.hydra/config.yaml`` (else an error names the keys that differ: ``conf/``
  changed since the run);
- an override that changes what was trained (``prompt.size=10``) is refused, naming it; only how
  the run goes on (:data:`RESUME_KEYS`: more epochs, other devices) may change;
- ``csv/metrics.csv`` keeps the epochs before the checkpoint and the resumed run appends to it
  (:class:`iqa_lightning.loggers.CSVLogger`); rows logged after the checkpoint, which the resumed
  run logs again, are dropped first;
- W&B resumes the run's own run id.

``python train.py hydra.run.dir=<run folder> ckpt_path=last`` means the same.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from iqa_lightning.errors import ConfigError
from iqa_lightning.phases import as_named, by_name
from iqa_lightning.run_folder import RunFolder

log = logging.getLogger("iqa_lightning")

#: Overrides a resumed run may change: how far and where it runs, not what it trains.
RESUME_KEYS = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.devices",
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.num_nodes",
    "dataset.num_workers",
    "instruct.num_workers",
    "logger.offline",
    "test",
    "zero_shot",
)
#: Keys the resumed config may differ in from the saved one.
VOLATILE_KEYS = ("ckpt_path",)
LAST = RunFolder.LAST
RESUME_ENV = "IQA_RESUMED_RUN"


def _split(arg: str) -> tuple[str, str]:
    key, _, value = arg.partition("=")
    return key.lstrip("+~"), value


def _value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def resumed_run(args: list[str]) -> Path | None:
    """The run folder ``args`` resume: ``resume=<run>``, or ``hydra.run.dir=<run>`` with
    ``ckpt_path=last`` where ``<run>`` holds a ``.hydra/config.yaml``; None for a new run."""
    keys = dict(_split(a) for a in args if "=" in a)
    if "resume" in keys:
        return Path(keys["resume"]).expanduser()
    run = keys.get("hydra.run.dir")
    if run and keys.get("ckpt_path") == "last" and RunFolder(run).config.is_file():
        return Path(run).expanduser()
    return None


def resume_args(args: list[str]) -> list[str]:
    """The command-line overrides that resume the run ``args`` name (unchanged for a new run).

    Raises:
        ConfigError: The folder is no run folder, has no checkpoint to resume, ``args`` is a
            multirun, or an override changes what the run trained (each is named).
    """
    run = resumed_run(args)
    if run is None:
        return args
    if any(a in ("-m", "--multirun") for a in args):
        raise ConfigError("resume=: one run at a time (not with -m / --multirun)")
    config_file, overrides_file = RunFolder(run).config, RunFolder(run).overrides
    if not config_file.is_file():
        raise ConfigError(f"resume={run}: no .hydra/config.yaml; is it a train.py run folder?")
    if not (run / LAST).is_file():
        if not any(_split(a)[0] == "resume" for a in args):
            return args  # ckpt_path=last without a checkpoint: a fresh start (a requeued job)
        raise ConfigError(
            f"resume={run}: nothing to resume, no {LAST.as_posix()} (the run stopped before its "
            "first validation); start it again"
        )
    saved_args = (
        list(yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []
    )
    saved = dict(_split(a) for a in saved_args)
    from omegaconf import OmegaConf

    saved_cfg = OmegaConf.load(config_file)
    hydra_file = RunFolder(run).hydra
    choices = {}
    if hydra_file.is_file():
        choices = dict(OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices") or {})
    extra, refused = [], []
    for arg in args:
        key, value = _split(arg)
        if key in ("resume", "hydra.run.dir", "ckpt_path") or "=" not in arg:
            continue
        if key in RESUME_KEYS:
            extra.append(arg)
            continue
        if key in saved:
            before = saved[key]
        elif key in choices:
            before = choices[key]
        else:
            before = OmegaConf.select(saved_cfg, key, default="<absent>")
        if _value(value) != (_value(before) if isinstance(before, str) else before):
            refused.append(f"{arg} (the run has {key}={before})")
    if refused:
        raise ConfigError(
            f"resume={run}: these overrides change what the run trained: {', '.join(refused)}; "
            f"a resumed run may change only {', '.join(RESUME_KEYS)}. Start a new run to change "
            "the others"
        )
    saved_names = as_named(OmegaConf.to_container(saved_cfg, resolve=False))

    def names(node: str) -> list[str]:  # the run's phases, by the saved config
        return list(OmegaConf.select(OmegaConf.create(saved_names), node) or {})

    return [
        *by_name(saved_args, names),
        *extra,
        f"hydra.run.dir={run.resolve()}",
        "hydra.output_subdir=null",
        f"ckpt_path={(run / LAST).resolve()}",
    ]


def check_resumed_config(cfg: Any, run: Path) -> None:
    """The composed config equals the run's saved one, but for :data:`RESUME_KEYS`.

    A key the saved config lacks (one added to ``conf/`` since the run, such as ``method``) or
    one it has and ``conf/`` no longer does (``stage.scorer``) is logged, not refused: the run
    was trained without it. A value that differs is refused.

    Raises:
        ConfigError: Naming the keys whose values differ (``conf/`` changed since the run).
    """
    from omegaconf import OmegaConf

    saved = as_named(OmegaConf.to_container(OmegaConf.load(RunFolder(run).config), resolve=False))
    now = OmegaConf.to_container(cfg, resolve=False)
    skip = set(RESUME_KEYS) | set(VOLATILE_KEYS)
    differ, shape = [], []
    for key, before, after in _diff(saved, now):
        if any(key == s or key.startswith(s + ".") for s in skip):
            continue
        (shape if ABSENT in (before, after) else differ).append(key)
    if shape:
        log.warning(
            "resume=%s: keys added to or dropped from conf/ since the run: %s (resumed as it "
            "was trained)", run, ", ".join(shape[:8]) + (" ..." if len(shape) > 8 else ""),
        )  # fmt: skip
    if differ:
        raise ConfigError(
            f"resume={run}: the config composed now differs from the run's .hydra/config.yaml in "
            f"{', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''} (conf/ changed since the "
            "run); resume it with the code it was trained with, or start a new run"
        )


ABSENT = "<absent>"


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, saved value, value now) of every leaf that differs; :data:`ABSENT` where a side
    lacks the key."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _diff(a.get(key, ABSENT), b.get(key, ABSENT), name)
        return out
    return [] if a == b else [(prefix, a, b)]


def checkpoint_epoch(path: Path) -> int:
    """The epoch a Lightning checkpoint was written in."""
    from iqa_lightning.checkpoints import load_checkpoint

    return int(load_checkpoint(path, map_location="cpu").get("epoch", 0))


def trim_metrics(metrics_csv: Path, last_epoch: int) -> int:
    """Drop the rows of epochs after ``last_epoch`` from ``metrics_csv`` (the resumed run logs
    them again); returns how many were dropped."""
    if not metrics_csv.is_file():
        return 0
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    keep = [r for r in rows if not r.get("epoch") or int(float(r["epoch"])) <= last_epoch]
    if len(keep) != len(rows):
        temp = metrics_csv.with_suffix(".csv.tmp")
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)
        os.replace(temp, metrics_csv)
    return len(rows) - len(keep)


def wandb_run_id(run: Path) -> str | None:
    """The id of the W&B run logged in ``<run>/wandb`` (``run-<time>-<id>`` folders)."""
    folders = sorted((run / "wandb").glob("*run-*")) if (run / "wandb").is_dir() else []
    return folders[-1].name.rsplit("-", 1)[-1] if folders else None


def resume_command(run: Path) -> str:
    """The command that resumes ``run``."""
    return f"python train.py resume={run}"


#: What makes a failed run's folder worth keeping: something to resume from or to read.
WORTH_KEEPING = ("checkpoints/*.ckpt", "checkpoints/**/*.safetensors", "metrics.json", "scorer")


#: What a run writes before it has anything worth keeping.
STUB_ENTRIES = (".hydra", "csv", "wandb", "checkpoints", "plots", "split.csv", "skipped_images.csv")


def worth_keeping(run: Path) -> bool:
    """Whether a failed run wrote something a user can resume from or read."""
    return any(any(run.glob(pattern)) for pattern in WORTH_KEEPING)


def discard_stub(run: Path, failed_dir: Path) -> Path | None:
    """Remove a failed run's folder that holds nothing worth keeping (:data:`WORTH_KEEPING`);
    its log (with the traceback to come) moves to ``failed_dir/<folder name>.log`` first, and
    the open log handlers follow it. Returns the moved log, or None when the folder stays."""
    import shutil

    if not run.is_dir() or worth_keeping(run):
        return None
    if any(entry.name not in STUB_ENTRIES and entry.suffix != ".log" for entry in run.iterdir()):
        return None  # something the run did not write: the folder is not the run's to remove
    failed_dir.mkdir(parents=True, exist_ok=True)
    moved = None
    for log_file in sorted(run.glob("*.log")):
        target = failed_dir / f"{run.name}.log"
        shutil.move(str(log_file), target)
        moved = target
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == log_file:
                handler.baseFilename = str(target)  # the open stream already points at it
    shutil.rmtree(run, ignore_errors=True)
    return moved
