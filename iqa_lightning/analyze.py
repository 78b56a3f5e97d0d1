"""Analyses of a finished run: what its model perceives before it answers.

    python -m iqa_lightning.analyze run=outputs/runs/<run> analysis=logit_lens
    python -m iqa_lightning.analyze run=<run> analysis=instability analysis.samples=20 \\
        analysis.temperature=1.0 analysis.seed=0
    python -m iqa_lightning.analyze run=<run> analysis=logit_lens dataset=koniq \\
        dataset.root=/data/koniq10k analysis.split=all analysis.max_images=500
    python -m iqa_lightning.analyze run=<run> analysis=attention
    python -m iqa_lightning.analyze run=<run> analysis=grounding analysis.description=given

The run's backbone, prompt and score head are rebuilt from its ``.hydra/config.yaml`` and
``checkpoints/tuned.safetensors`` (:func:`~iqa_lightning.runs.rebuild_run`). The images are the
run's own dataset (as composed for the run, split with its seed) unless ``dataset=<option>``
names another (composed with the run's ``model.image_size`` and ``seed``, as
``python -m iqa_lightning.eval`` composes it); ``dataset.<key>=...`` without ``dataset=`` changes
the run's own (e.g. ``dataset.root`` of moved data). ``analysis.split=test`` (default) takes its
test split, ``all`` every image; ``analysis.max_images`` keeps the first ones. Each batch goes
through the run's scoring path in ``Trainer.predict`` (one process; ``trainer=`` takes the
one-device presets) and the analysis (:data:`~iqa_lightning.analysis.ANALYSES`: ``logit_lens``,
``instability``, ``attention``, ``grounding``; see their modules for the exact definitions) writes its files under
``<run>/analysis/``; when the run logged to W&B they are logged to that W&B run as well. Progress
is counted in images (a bar on a terminal; a line with rate and ETA in ``analyze.log`` at most
every 30 s, ``IQA_PROGRESS_SECONDS``).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from iqa_lightning import hydra_entry
from iqa_lightning.errors import ConfigError
from iqa_lightning.eval import check_run, dataset_config, dataset_overrides, run_settings
from iqa_lightning.runs import load_run_config, rebuild_run, resumed_wandb_run, run_folder

log = logging.getLogger("iqa_lightning.analyze")

RUN_REQUIRED = "run=<run folder> is required: the train.py run folder to analyse"
SPLITS = ("test", "all")


def analysis_loader(datamodule, split: str, max_images: int | None):
    """An ordered, unflipped loader over ``split`` (``test`` or ``all``), capped at the first
    ``max_images`` images."""
    from torch.utils.data import Subset

    from iqa_lightning.data.dataset import make_loader

    dataset = datamodule.dataset(split)
    if max_images is not None:
        if int(max_images) < 1:
            raise ConfigError(f"analysis.max_images={max_images} must be a positive integer")
        dataset = Subset(dataset, range(min(int(max_images), len(dataset))))
    if len(dataset) == 0:
        raise ConfigError(f"{datamodule.name}: the {split} split holds no image")
    return make_loader(dataset, datamodule.eval_batch_size, datamodule.num_workers, shuffle=False)


def analyze(cfg: DictConfig) -> list[Path]:
    """Run ``cfg.analysis`` on the run ``cfg.run``; returns the files written."""
    from hydra.utils import instantiate

    from iqa_lightning.analysis import ANALYSES, run_analysis
    from iqa_lightning.build import build_trainer

    if OmegaConf.is_missing(cfg, "run") or not str(cfg.run or "").strip():
        raise ConfigError(RUN_REQUIRED)
    options = cfg.analysis
    name = options.get("name")
    if name not in ANALYSES:
        raise ConfigError(f"analysis={name!r}: the analyses are {sorted(ANALYSES)}")
    if options.split not in SPLITS:
        raise ConfigError(f"analysis.split={options.split!r} must be 'test' or 'all'")
    ANALYSES[name].check(options)
    run = run_folder(cfg.run)
    run_cfg = load_run_config(run)
    if int(cfg.model.image_size) != int(run_cfg.model.image_size):
        raise ConfigError(
            f"model.image_size={cfg.model.image_size} but the run was trained at "
            f"{run_cfg.model.image_size}; leave model.image_size unset (it comes from the run)"
        )
    node = dataset_config(cfg, run_cfg)
    datamodule = instantiate(node)
    datamodule.prepare_data()
    datamodule.setup("test")
    loader = analysis_loader(datamodule, options.split, options.get("max_images"))
    module = rebuild_run(run, run_cfg)
    with open_dict(cfg):  # the analysis reports its progress in images (a bar and log lines)
        cfg.trainer.enable_progress_bar = False
    trainer = build_trainer(cfg, callbacks=[], loggers=[])
    _, files = run_analysis(name, trainer, module, loader, options, run / "analysis")
    log.info("%s on %s (%s, %d images)", name, datamodule.name, options.split,
             len(loader.dataset))  # fmt: skip
    log_to_wandb(run, run_cfg, name, files)
    print("\n".join(str(f) for f in files), flush=True)
    return files


def log_to_wandb(run: Path, run_cfg: DictConfig, name: str, files: Sequence[Path]) -> None:
    """Log the files to the run's W&B run (resumed by id) when the run logged to W&B: a PNG as
    the image ``analysis/<name>/<stem>_plot``, a CSV as the table ``analysis/<name>/<stem>_table``,
    the numbers of a JSON file as ``analysis/<name>/<key>``."""
    with resumed_wandb_run(run, run_cfg) as wb:
        if wb is None:
            return
        import wandb

        logged = {}
        for path in files:
            key = f"analysis/{name}/{path.stem}"
            if path.suffix == ".png":
                logged[f"{key}_plot"] = wandb.Image(str(path))
            elif path.suffix == ".csv":
                with open(path, newline="", encoding="utf-8") as f:
                    rows = list(csv.reader(f))
                logged[f"{key}_table"] = wandb.Table(columns=rows[0], data=rows[1:])
            elif path.suffix == ".json":
                figures = json.loads(path.read_text())
                logged.update({
                    f"analysis/{name}/{k}": v for k, v in figures.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                })  # fmt: skip
        wb.log(logged)


_hydra_main = hydra_entry.driver("analyze")(analyze)


def main() -> None:
    """Entry point of ``python -m iqa_lightning.analyze`` (a missing or wrong ``run=`` ends in one
    line and creates nothing, as with ``python -m iqa_lightning.eval``:
    :func:`~iqa_lightning.eval.check_run`)."""
    args = sys.argv[1:]
    check_run(args, RUN_REQUIRED)
    sys.argv = [sys.argv[0], *dataset_overrides(args), *run_settings(args)]
    with hydra_entry.reported():
        _hydra_main()


if __name__ == "__main__":
    main()
