"""Cross-dataset evaluation of a finished run, or zero-shot of a model preset.

    python -m iqa_lightning.eval run=outputs/runs/<run>     # the run's own test split
    python -m iqa_lightning.eval run=outputs/runs/<run> dataset=koniq dataset.root=/data/koniq
    python -m iqa_lightning.eval run=... eval.datasets=[kadid,koniq] \\
        eval.roots.kadid=/data/kadid10k eval.roots.koniq=/data/koniq10k eval.name=synthetic2real

    python -m iqa_lightning.eval run=... dataset=koniq dataset.root=... trainer=ddp   # every GPU
    python -m iqa_lightning.eval model=q_align_koniq protocol=koniq_only eval.roots.koniq=...

The run's backbone, prompt and score head are rebuilt from its ``.hydra/config.yaml`` and its
tuned tensors loaded from ``checkpoints/tuned.safetensors`` (:func:`~iqa_lightning.runs.rebuild_run`).
Zero-shot, ``model=<preset>`` (with ``score=``, ``prompt=``, ``method=`` as the scoring CLI takes
them; a checkpoint preset brings its authors' score head) is built frozen
(:func:`~iqa_lightning.scorer.zero_shot_module`) and the datasets take its input size and resize;
exactly one of ``run=`` and ``model=`` is given (:func:`check_source`). The files go to
``eval.out``: by default the run folder, zero-shot a new ``outputs/eval/<time>_<model>/``.
Without ``dataset=`` or ``eval.datasets`` the dataset is the run's own (as composed for the run,
split with its seed; ``dataset.<key>=...`` changes it, e.g. the ``root`` of moved data).
``eval.split=auto`` (default) scores the test split of the run's own dataset (the images it never
trained on; zero-shot, of the protocol's training sets) and every image of another dataset
(cross-dataset); ``eval.split=test`` or ``all``
forces one for every dataset. Each dataset is scored
through a Lightning Trainer built from ``trainer`` (the training presets: ``default``, ``gpu``,
``ddp``, ``ddp_sim``, ...) and :func:`~iqa_lightning.scorer.score_loader`; under DDP each
process scores an unpadded share, so every image is scored once and the figures equal a
single process's. Rank 0 writes to the output folder ``eval_<name>.json`` (SRCC / PLCC / KRCC and
logistic-fitted PLCC per dataset, with 95% bootstrap intervals of SRCC and PLCC:
``srcc_lo``, ``srcc_hi``, ``plcc_lo``, ``plcc_hi``), ``eval_<name>.md`` (the same as a markdown
table, an interval shown after its figure: ``0.8123 [0.7710, 0.8501]``) and
``predictions_eval_<dataset>.csv``; when the run logged to W&B the table goes there too.
``eval.bootstrap`` sets the resamples (0: no intervals) and ``eval.bootstrap_seed`` their seed
(:func:`~iqa_lightning.bootstrap.bootstrap_intervals`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from iqa_lightning.build import CONFIG_DIR
from iqa_lightning.cli import error_line, report_user_errors
from iqa_lightning.data.mix import compose_dataset
from iqa_lightning.errors import ConfigError
from iqa_lightning.protocols import protocol_test_sets, protocol_train_sets, write_protocol
from iqa_lightning.quantization import with_quantization
from iqa_lightning.quiet import quiet
from iqa_lightning.runs import load_run_config, rebuild_run, resumed_wandb_run, run_folder

log = logging.getLogger("iqa_lightning.eval")

COLUMNS = ("srcc", "plcc", "krcc", "plcc_logistic4", "plcc_logistic5", "n")
# Bootstrap interval bounds of a figure of COLUMNS, where the figures have them.
INTERVALS = {"srcc": ("srcc_lo", "srcc_hi"), "plcc": ("plcc_lo", "plcc_hi")}
RUN_REQUIRED = "run=<run folder> is required: the train.py run folder to evaluate"
SOURCE_REQUIRED = (
    "run=<run folder> or model=<preset> is required: the train.py run folder to evaluate, or a "
    "model preset to score zero-shot"
)
BOTH_SOURCES = "give run=<run folder> or model=<preset>, not both"
#: The groups that compose a zero-shot model (as the scoring CLI's); with run= the run's own.
ZERO_SHOT_GROUPS = ("model", "score", "prompt", "prompt_optimizer", "method")
#: Keys of ``model`` that apply to a run's model too.
RUN_MODEL_KEYS = ("model.quantization", "model.image_size")
SPLITS = ("auto", "test", "all")
RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def rank_zero_path(path: str) -> str:
    """``path`` in the process of global rank 0, else the null device (resolver
    ``${iqa_rank_zero_path:...}``: the log file of DDP processes other than rank 0)."""
    others = any(os.environ.get(name, "0") not in ("", "0") for name in RANK_ENV)
    return os.devnull if others else path


OmegaConf.register_new_resolver("iqa_rank_zero_path", rank_zero_path, replace=True)


def eval_folder(run: str | None, out: str | None, new: str) -> str:
    """The output folder (resolver ``${iqa_eval_folder:...}``, Hydra's run folder):
    ``eval.out`` when given, else the run folder, else ``new`` (zero-shot:
    ``outputs/eval/<time>_<model>``)."""
    return str(out or run or new)


OmegaConf.register_new_resolver("iqa_eval_folder", eval_folder, replace=True)


def dataset_config(cfg: DictConfig, run_cfg: DictConfig | None) -> DictConfig:
    """The dataset of ``cfg``: ``cfg.dataset`` when it is a dataset option (has a
    ``_target_``), else the run's own dataset with ``cfg.dataset``'s keys (if any) on top.

    The run's node is resolved in the run's config (its ``model.image_size``, ``seed``,
    ``paths``). Zero-shot (``run_cfg`` None) there is no own dataset: one must be named."""
    given_node = cfg.get("dataset")
    if given_node is not None and "_target_" in given_node:
        return given_node
    if run_cfg is None:
        raise ConfigError(
            "model=<preset> has no dataset of its own: name the datasets with protocol=<name>, "
            "eval.datasets=[...] or dataset=<option>"
        )
    if run_cfg.get("dataset") is None:
        raise ConfigError("the run's config has no dataset; name one with dataset=<option>")
    node = OmegaConf.create(OmegaConf.to_container(run_cfg.dataset, resolve=True))
    if given_node is not None:
        node = OmegaConf.merge(node, given_node)
    return node


def dataset_overrides(args: Sequence[str]) -> list[str]:
    """``args`` with ``dataset.<key>=...`` made ``+dataset.<key>=...`` when no ``dataset=`` is
    given: they then change the run's own dataset (the driver's config has no dataset node)."""
    if given(args, "dataset"):
        return list(args)
    return [f"+{a}" if a.split("=", 1)[0].startswith("dataset.") and "=" in a else a for a in args]


def dataset_configs(cfg: DictConfig, run_cfg: DictConfig | None) -> dict[str, DictConfig]:
    """The datasets to evaluate on: ``eval.datasets`` (a list of dataset options), else
    ``dataset`` (an option, or the run's own dataset: :func:`dataset_config`).

    Each option of ``eval.datasets`` is composed by Hydra (``hydra.compose``) with this command's
    own overrides, so it gets the same defaults, interpolations and checks as the ``dataset``
    group (its ``image_size`` is the run's ``model.image_size``, zero-shot the preset's;
    ``run_cfg`` is then None).
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    names = list(cfg.eval.get("datasets") or [])
    protocol = cfg.get("protocol")
    if not names and protocol is not None:  # the protocol's test sets, in the papers' order
        names = list(protocol_test_sets(protocol))
    if not names and cfg.get("dataset") is None:  # a mix's datasets, each its own table row
        names = mixed_datasets(run_cfg)
    if not names:
        node = dataset_config(cfg, run_cfg)
        return {node.get("name") or "dataset": node}
    # The run's own roots of the datasets it mixed, unless eval.roots gives others.
    roots = {**mixed_roots(run_cfg), **(cfg.eval.get("roots") or {})}
    options = sorted(p.stem for p in (Path(CONFIG_DIR) / "dataset").glob("[!_]*.yaml"))
    # The command's overrides, but the dataset choice and its root: dataset.<key> settings such
    # as dataset.eval_batch_size apply to every dataset of the table (given as +dataset.<key>
    # when no dataset= was: here each is set on a composed option).
    given_overrides = [
        o[1:] if o.startswith("+dataset.") else o
        for o in HydraConfig.get().overrides.task
        if o.lstrip("+~").split("=", 1)[0] not in ("dataset", "dataset.root")
    ]
    out = {}
    for name in names:
        if name not in options:
            raise ConfigError(f"eval.datasets: no dataset option {name!r}; options are {options}")
        overrides = [*given_overrides, f"dataset={name}"]
        if name in roots:
            overrides.append(f"dataset.root={roots[name]}")
        out[name] = compose(config_name="eval", overrides=overrides).dataset
    return out


def mixed_datasets(run_cfg: DictConfig | None) -> list[str]:
    """The dataset options a run trained on together (``dataset=mix``); empty for one dataset
    (or no run)."""
    if run_cfg is None:
        return []
    names = OmegaConf.select(run_cfg, "dataset.datasets", default=None)
    return [str(n) for n in names] if OmegaConf.is_list(names) else []


def mixed_roots(run_cfg: DictConfig | None) -> dict[str, str]:
    """The root of each dataset a mix run trained on: its ``dataset.roots`` entry, else the
    option's default root composed in the run's context (the run's ``paths.data_dir``)."""
    names = mixed_datasets(run_cfg)
    if not names:
        return {}
    node = OmegaConf.to_container(run_cfg.dataset, resolve=True)
    roots = node.get("roots") or {}
    return {
        name: str(roots.get(name) or compose_dataset(name, node["context"]).root)
        for name in names
    }


def split_for(
    split: str, node: DictConfig, run_cfg: DictConfig | None, trained: Sequence[str] = ()
) -> str:
    """The split to score of dataset ``node``: ``split`` unless ``auto``; ``auto`` is ``test``
    for the run's own dataset (same ``name``, or one of the datasets a mix run trained on: the
    images the run never trained on) and for the datasets named in ``trained`` (zero-shot: the
    protocol's training sets, so a released checkpoint is tested where its authors tested it),
    and ``all`` for any other (cross-dataset evaluation scores it whole)."""
    if split != "auto":
        return split
    own = {*trained, *mixed_datasets(run_cfg)}
    if run_cfg is not None:
        own.add(OmegaConf.select(run_cfg, "dataset.name", default=None))
    return "test" if node.get("name") in own else "all"


def correlations(
    scores: Sequence[float], targets: Sequence[float], bootstrap: int = 0, seed: int = 0
) -> dict[str, float]:
    """SRCC / PLCC / KRCC (torchmetrics, fp64) and PLCC after 4- and 5-parameter logistic fits,
    and ``n``; NaN where a figure is undefined (constant scores, too few images to fit).

    Functional torchmetrics: the rows are already gathered, so nothing syncs across DDP ranks
    (a rank may call this alone).

    Args:
        scores: One predicted score per image.
        targets: The images' targets, in the same order.
        bootstrap: Resamples of the 95% bootstrap intervals ``srcc_lo``, ``srcc_hi``,
            ``plcc_lo``, ``plcc_hi`` (:func:`~iqa_lightning.bootstrap.bootstrap_intervals`);
            0: no interval keys.
        seed: Seed of the resampling (the same seed gives the same intervals on every rank).
    """
    import torch
    from torchmetrics.functional import kendall_rank_corrcoef, pearson_corrcoef, spearman_corrcoef

    from iqa_lightning.metrics import plcc_logistic

    scores = torch.tensor(list(scores), dtype=torch.float64)
    targets = torch.tensor(list(targets), dtype=torch.float64)
    out = {
        name: float(fn(scores, targets)) if len(scores) > 1 else float("nan")
        for name, fn in (("srcc", spearman_corrcoef), ("plcc", pearson_corrcoef),
                         ("krcc", kendall_rank_corrcoef))
    }  # fmt: skip
    out["plcc_logistic4"] = plcc_logistic(scores.numpy(), targets.numpy(), params=4)
    out["plcc_logistic5"] = plcc_logistic(scores.numpy(), targets.numpy(), params=5)
    out["n"] = len(scores)
    if bootstrap:
        from iqa_lightning.bootstrap import INTERVAL_KEYS, bootstrap_intervals

        finite = bool(torch.isfinite(scores).all() and torch.isfinite(targets).all())
        bounds = (
            bootstrap_intervals(scores.numpy(), targets.numpy(), n=bootstrap, seed=seed)
            if finite
            else {}  # a NaN score: the figures are NaN, and so are their intervals
        )
        out.update({key: bounds.get(key, float("nan")) for key in INTERVAL_KEYS})
    return out


def _with_interval(figures: dict[str, float], column: str) -> str:
    """``0.8123``, or ``0.8123 [0.7710, 0.8501]`` where the figures carry its interval."""
    cell = f"{figures[column]:.4f}"
    if column in INTERVALS:
        lo, hi = (figures.get(key) for key in INTERVALS[column])
        if lo is not None and hi is not None:
            cell += f" [{lo:.4f}, {hi:.4f}]"
    return cell


def interval_columns(results: dict[str, dict[str, float]]) -> list[str]:
    """The interval bounds any dataset's figures carry, in :data:`INTERVALS` order."""
    keys = [key for pair in INTERVALS.values() for key in pair]
    return [key for key in keys if any(key in figures for figures in results.values())]


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One row per dataset, one column per figure; SRCC and PLCC followed by their bootstrap
    interval where the figures have one (``0.8123 [0.7710, 0.8501]``); the split scored last,
    where the figures name it."""
    tail = [c for c in ("parse_failures", "split") if any(c in f for f in results.values())]
    columns = [*COLUMNS, *tail]
    lines = ["| dataset | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figures in results.items():
        cells = [
            str(figures.get(c)) if c in ("n", *tail) else _with_interval(figures, c)
            for c in columns
        ]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(results: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    return {
        name: {k: None if isinstance(v, float) and v != v else v for k, v in figures.items()}
        for name, figures in results.items()
    }


#: The extra a generating scorer gives each image: whether a score was parsed from its answer
#: (counted per dataset as ``parse_failures`` in eval's table).
PARSE_OK = "parse_ok"


def zero_shot(cfg: DictConfig) -> bool:
    """Whether ``cfg`` scores a model preset zero-shot (``model=<preset>``: a ``model`` with a
    ``_target_``) rather than a run; refuses both or neither (:data:`SOURCE_REQUIRED`)."""
    run = not OmegaConf.is_missing(cfg, "run") and bool(str(cfg.get("run") or "").strip())
    model = "_target_" in (cfg.get("model") or {})
    if run and model:
        raise ConfigError(BOTH_SOURCES)
    if not run and not model:
        raise ConfigError(SOURCE_REQUIRED)
    return model


def output_folder(cfg: DictConfig, run: Path | None) -> Path:
    """Where the files go: ``eval.out``, else the run folder, else (zero-shot) Hydra's run
    folder (``outputs/eval/<time>_<model>``)."""
    out = cfg.eval.get("out")
    if out:
        return Path(str(out)).expanduser()
    if run is not None:
        return run
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # outside a Hydra app: no folder was made for this evaluation
        raise ConfigError("model=<preset> outside the CLI: give eval.out=<folder>") from None


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Evaluate the run ``cfg.run`` (or, zero-shot, the preset ``model``) on every requested
    dataset and write the results.

    Every process of a DDP run returns the same figures; only rank 0 writes files.
    """
    from hydra.utils import instantiate

    from iqa_lightning.build import build_trainer
    from iqa_lightning.callbacks.predictions import COLUMNS as PREDICTION_COLUMNS
    from iqa_lightning.callbacks.predictions import write_rows
    from iqa_lightning.hub import preset_choice
    from iqa_lightning.scorer import RowCollector, score_loader, zero_shot_module

    preset = zero_shot(cfg)
    split = cfg.eval.split
    if split not in SPLITS:
        raise ConfigError(f"eval.split={split!r} must be one of {', '.join(SPLITS)}")
    bootstrap = cfg.eval.get("bootstrap") or 0
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ConfigError(f"eval.bootstrap={bootstrap!r} must be a number of resamples >= 0")
    protocol = cfg.get("protocol")
    if preset:  # the preset scored as its authors do (its own score head), nothing trained
        run = run_cfg = None
        ours = preset_choice("model") or "zero-shot"
        trained = list(protocol_train_sets(protocol)) if protocol is not None else []
        nodes = dataset_configs(cfg, None)  # before the model loads: a wrong dataset ends first
        module = zero_shot_module(cfg)
    else:
        run = run_folder(cfg.run)
        run_cfg = load_run_config(run)
        ours, trained = run.name, []
        if int(cfg.model.image_size) != int(run_cfg.model.image_size):
            raise ConfigError(
                f"model.image_size={cfg.model.image_size} but the run was trained at "
                f"{run_cfg.model.image_size}; leave model.image_size unset (it comes from the run)"
            )
        nodes = dataset_configs(cfg, run_cfg)
        quantized = with_quantization(run_cfg, OmegaConf.select(cfg, "model.quantization"), run)
        module = rebuild_run(run, quantized)
    out = output_folder(cfg, run)
    collector = RowCollector()
    trainer = build_trainer(cfg, callbacks=[collector], loggers=[])

    results = {}
    for name, node in nodes.items():
        datamodule = instantiate(node)
        datamodule.prepare_data()
        datamodule.setup("test")
        scored = split_for(split, node, run_cfg, trained)
        rows = score_loader(trainer, module, datamodule.eval_dataloader(scored))
        results[name] = correlations(
            [r["score"] for r in rows],
            [r["target"] for r in rows],
            bootstrap=bootstrap,
            seed=int(cfg.eval.get("bootstrap_seed") or 0),
        )
        results[name]["split"] = scored
        if PARSE_OK in collector.extra_keys:  # a generating scorer: answers without a score
            results[name]["parse_failures"] = sum(not r[PARSE_OK] for r in rows)
        if trainer.is_global_zero:
            columns = [*PREDICTION_COLUMNS, *collector.extra_keys]
            out.mkdir(parents=True, exist_ok=True)
            write_rows(out / f"predictions_eval_{name}.csv", rows, columns)
            log.info("%s (%s, %d images): %s", name, scored, len(rows), results[name])

    if not trainer.is_global_zero:
        return results
    table_name = cfg.eval.get("name") or (
        f"protocol_{protocol.name}" if protocol is not None else "_".join(results)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"eval_{table_name}.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    table = markdown_table(results)
    (out / f"eval_{table_name}.md").write_text(table)
    if run is not None:
        log_to_wandb(run, run_cfg, table_name, results)
    print(f"\n{out}/eval_{table_name}.md\n{table}", flush=True)
    if protocol is not None:  # the papers' table: our row beside the published ones
        origin = "zero-shot" if preset else "this run"
        md, _ = write_protocol(out, protocol, results, ours=ours, origin=origin)
        print(f"\n{md}\n{md.read_text()}", flush=True)
    return results


def log_to_wandb(run: Path, run_cfg: DictConfig, name: str, results: dict) -> None:
    """Add the table to the run's W&B run (resumed by id) when the run logged to W&B."""
    with resumed_wandb_run(run, run_cfg) as wb:
        if wb is None:
            return
        import wandb

        columns = [*COLUMNS, *interval_columns(results), "split"]
        table = wandb.Table(columns=["dataset", *columns])
        for dataset, figures in results.items():
            table.add_data(dataset, *[figures.get(c) for c in columns])
            wb.log({f"eval/{dataset}/{k}": v for k, v in figures.items() if k != "split"})
        wb.log({f"eval/{name}": table})


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    quiet()  # each Lightning line once, no tips or known library noise, the figures last
    evaluate(cfg)


def given(args: Sequence[str], key: str) -> bool:
    """Whether command-line overrides set ``key`` (``run=...``, ``+run=...``, ``++run=...``)."""
    return any(a.split("=", 1)[0].lstrip("+") == key for a in args if "=" in a)


def check_run(args: Sequence[str], required: str = RUN_REQUIRED) -> None:
    """End at once, with one ``error:`` line and exit code 1, when the command line gives no
    ``run=`` (``required`` says what it is for) or a ``run=`` that is not a train.py run folder.

    Checked before Hydra starts: the run folder is also where Hydra's log goes
    (``hydra.run.dir: ${run}``), so Hydra would otherwise create a missing folder for its log
    file, or stop with a traceback when ``run=`` is missing. ``--help``, ``--cfg`` and other
    flags are left to Hydra; under ``-m`` each comma-separated run is checked.
    """
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return
    values = [
        a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+") == "run"
    ]
    problem: Exception | None = None if values else ConfigError(required)
    multirun = any(a in ("-m", "--multirun") for a in args)
    for value in values:
        for run in value.split(",") if multirun else [value]:
            try:
                run_folder(run)
            except FileNotFoundError as err:
                problem = problem or err
    if problem is not None:
        print(error_line(problem), file=sys.stderr, flush=True)
        raise SystemExit(1)


def check_source(args: Sequence[str]) -> None:
    """End at once, with one ``error:`` line and exit code 1, unless the command line gives
    exactly one of ``run=`` and ``model=``; with ``run=``, also on an override of the groups
    that compose a zero-shot model (:data:`ZERO_SHOT_GROUPS`: the run brings its own), and on a
    ``run=`` that is not a run folder (:func:`check_run`). Flags are left to Hydra."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return
    problem = None
    if given(args, "run") and given(args, "model"):
        problem = BOTH_SOURCES
    elif not given(args, "run") and not given(args, "model"):
        problem = SOURCE_REQUIRED
    elif given(args, "run"):
        keys = [(a, a.split("=", 1)[0].lstrip("+~")) for a in args if "=" in a]
        clash = [a for a, key in keys
                 if key.split(".", 1)[0] in ZERO_SHOT_GROUPS and key not in RUN_MODEL_KEYS]  # fmt: skip
        if clash:
            problem = (
                f"run= rebuilds the run's own model, prompt and score head; drop {clash}, or "
                "give model=<preset> instead of run= to score zero-shot"
            )
    if problem is not None:
        print(error_line(ConfigError(problem)), file=sys.stderr, flush=True)
        raise SystemExit(1)
    if given(args, "run"):
        check_run(args)


def main() -> None:
    """Entry point of ``python -m iqa_lightning.eval`` (:func:`check_source` first: a missing or
    wrong ``run=``, or both ``run=`` and ``model=``, ends in one line and creates nothing)."""
    args = sys.argv[1:]
    check_source(args)
    sys.argv = [sys.argv[0], *dataset_overrides(args), *run_settings(args)]
    from iqa_lightning import hydra_entry

    with hydra_entry.reported():
        _hydra_main()


def run_settings(args: Sequence[str]) -> list[str]:
    """Overrides that give the datasets the run's own input size and split seed
    (``model.image_size``, ``seed`` from the run's ``.hydra/config.yaml``), unless given.

    A run folder that cannot be read adds nothing: :func:`evaluate` then names the problem.
    """
    run = next((a.split("=", 1)[1] for a in args if a.split("=", 1)[0].lstrip("+") == "run"), None)
    if run is None:
        return []
    try:
        run_cfg = load_run_config(run_folder(run))
    except (OSError, ValueError):
        return []
    settings = {"model.image_size": run_cfg.model.image_size, "seed": run_cfg.get("seed", 0)}
    return [f"{key}={value}" for key, value in settings.items() if not given(args, key)]


if __name__ == "__main__":
    main()
