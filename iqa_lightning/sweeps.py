"""Sweeps (``python train.py -m ...``): a grid sweeper without duplicate jobs, and the summary
of a finished sweep.

:class:`GridSweeper` (``hydra/sweeper=grid``) runs a union of grids, each a cartesian product
like Hydra's basic sweeper, and drops every job whose composed config equals an earlier job's.
A prompt type without a size (``overlay`` covers the whole image) then runs once, not once per
size:

    hydra:
      sweeper:
        grids:
          - {prompt: "padding,patch_center,patch_topleft", prompt.size: "10,30"}
          - {prompt: overlay}

:class:`SweepSummary` (a Hydra callback, registered in ``conf/hydra/default.yaml``) writes, once
every job of a multirun has run, into the sweep folder:

    sweep_summary.csv / .md     one row per job: overrides, status, method, val/test SRCC and
                                PLCC, the test figures' 95% bootstrap intervals, the p-value
                                against the zero-shot model, trainable parameters, wall time,
                                peak memory, run folder
    sweep_srcc_vs_size.png      test SRCC against prompt size, one line per prompt type
    sweep_srcc_vs_params.png    test SRCC against trainable parameters, one point per method

and logs them to a W&B run of the sweep's group when the sweep logs to W&B. A job that ended on
a user error (see :mod:`iqa_lightning.cli`) is listed as failed; the sweep then exits with
code 1 after the summary, its last line naming the failed jobs.

Comparing methods (``hparams_search=methods``): ``method``, ``wall_time_s`` and
``peak_memory_mb`` come from a job's ``metrics.json``; ``test_srcc_ci`` / ``test_plcc_ci``
(1000 resamples, seed 0) and ``p_vs_zero_shot`` from its prediction files
(:mod:`iqa_lightning.sweep_stats`). When a job has zero-shot predictions, a first row with
status and method ``zero-shot`` (0 trainable parameters) gives the first such job's zero-shot
figures. Every one of these files is optional.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from iqa_lightning.cli import ERROR_FILE
from iqa_lightning.run_folder import RunFolder
from iqa_lightning.sweep_plots import (
    plot_srcc_vs_params,
    plot_srcc_vs_size,
    srcc_vs_params_figure,
    srcc_vs_size_figure,
)
from iqa_lightning.sweep_stats import (
    BOOTSTRAP,
    BOOTSTRAP_SEED,
    STAT_COLUMNS,
    ZERO_SHOT,
    prediction_figures,
    zero_shot_figures,
)

log = logging.getLogger(__name__)

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
SRCC_PLOT = "sweep_srcc_vs_size.png"
PARAMS_PLOT = "sweep_srcc_vs_params.png"
METRIC_COLUMNS = ("val/srcc", "val/plcc", "val/srcc_best", "test/srcc", "test/plcc")
RUN_COLUMNS = ("trainable_parameters", "wall_time_s", "peak_memory_mb")  # from metrics.json
COLUMNS = (
    "job",
    "overrides",
    "status",
    "method",
    "dataset",
    "prompt",
    "prompt_size",
    "prompt_mode",
    *METRIC_COLUMNS,
    *STAT_COLUMNS,
    *RUN_COLUMNS,
    "run_folder",
)
# Markdown formats other than 4 decimals.
FORMATS = {"wall_time_s": "{:.1f}", "peak_memory_mb": "{:.0f}"}

__all__ = [
    "COLUMNS",
    "ZERO_SHOT",
    "GridSweeper",
    "SweepSummary",
    "plot_srcc_vs_params",
    "plot_srcc_vs_size",
    "srcc_vs_params_figure",
    "srcc_vs_size_figure",
    "read_sweep",
    "summarize_sweep",
    "write_summary",
]


# ------------------------------------------------------------------------------------ sweeper
class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper over a union of grids, without duplicate jobs.

    Args:
        max_batch_size: Jobs launched at a time (None: all).
        params: One grid, as ``hydra.sweeper.params`` of the basic sweeper.
        grids: Several grids (each a mapping of key to comma-separated values); the jobs are
            the union of their cartesian products, in order. Sweep overrides given on the
            command line apply to every grid.
        dedup: Drop a job whose composed config (``hydra`` node aside) equals an earlier one's.
    """

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        grids: Sequence[dict[str, str]] | None = None,
        dedup: bool = True,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=None)
        grids = [dict(g or {}) for g in grids or []]
        if params:
            grids.insert(0, dict(params))
        self.grids = grids or [{}]
        self.dedup = bool(dedup)
        self.dropped: list[list[str]] = []

    def job_overrides(self, arguments: Sequence[str]) -> list[list[str]]:
        """Every job's overrides: each grid crossed with ``arguments``, duplicates dropped."""
        assert self.hydra_context is not None and self.config is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs: list[list[str]] = []
        for grid in self.grids:
            specs = [f"{key}={value}" for key, value in grid.items()] + list(arguments)
            (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(specs), None)
            jobs += batch
        kept, seen, self.dropped = [], set(), []
        for job in jobs:
            key = self._identity(job)
            if key in seen:
                self.dropped.append(job)
                continue
            seen.add(key)
            kept.append(job)
        for job in self.dropped:
            log.info("sweep: dropped %s (the same config as an earlier job)", " ".join(job))
        return kept

    def _identity(self, job: list[str]) -> Any:
        if not self.dedup:
            return tuple(sorted(job))
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        with_hydra = OmegaConf.to_container(cfg, resolve=False)
        with_hydra.pop("hydra", None)
        return json.dumps(with_hydra, sort_keys=True, default=str)

    def split_arguments(self, overrides, max_batch_size):  # called by BasicSweeper.sweep
        jobs = self.job_overrides([_override_text(o) for o in overrides])
        if max_batch_size is None or max_batch_size == -1:
            return [jobs]
        return [jobs[i : i + max_batch_size] for i in range(0, len(jobs), max_batch_size)]


def _override_text(override) -> str:
    return override.input_line or f"{override.get_key_element()}={override.value()}"


# ------------------------------------------------------------------------------------ summary
def _job_folders(sweep_dir: Path) -> list[Path]:
    folders = [p.parent.parent for p in sweep_dir.glob(f"**/{RunFolder.OVERRIDES.as_posix()}")]
    return [f for f in folders if f != sweep_dir]


def _job_number(folder: Path) -> int | None:
    hydra_file = RunFolder(folder).hydra
    if hydra_file.exists():
        num = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.num")
        if num is not None:
            return int(num)
    return int(folder.name) if folder.name.isdigit() else None


def _run_settings(folder: Path) -> dict[str, Any]:
    """Dataset, prompt option, prompt.size and prompt.mode from the job's saved configs (None
    where the job's config has no such value: an overlay prompt has no size)."""
    out: dict[str, Any] = {
        "dataset": None,
        "prompt": None,
        "prompt_size": None,
        "prompt_mode": None,
    }
    hydra_file, config_file = RunFolder(folder).hydra, RunFolder(folder).config
    if hydra_file.exists():
        choices = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices") or {}
        out["prompt"] = choices.get("prompt")
        out["dataset"] = choices.get("dataset")
    if config_file.exists():
        config = OmegaConf.load(config_file)
        for key, column in (("prompt.size", "prompt_size"), ("prompt.mode", "prompt_mode")):
            out[column] = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    return out


def _zero_shot_row(
    sweep_dir: Path, rows: list[dict[str, Any]], bootstrap: int, seed: int
) -> dict[str, Any] | None:
    """The ``zero-shot`` row from the first job (in job order) with a readable
    ``predictions_zeroshot_test.csv``; None when no job has one."""
    found = zero_shot_figures([sweep_dir / r["run_folder"] for r in rows], bootstrap, seed)
    if found is None:
        return None
    index, figures = found
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(overrides="", status=ZERO_SHOT, method=ZERO_SHOT, dataset=rows[index]["dataset"])
    row.update(figures)
    row.update(trainable_parameters=0, run_folder=rows[index]["run_folder"])
    return row


def job_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the sweep's jobs: all but the ``zero-shot`` row."""
    return [r for r in rows if r["status"] != ZERO_SHOT]


def read_sweep(
    sweep_dir: str | Path, bootstrap: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> list[dict[str, Any]]:
    """One row per job folder of a sweep (columns :data:`COLUMNS`), in job order, after the
    ``zero-shot`` row where a job has zero-shot predictions (module doc).

    ``status`` is ``ok`` (``metrics.json`` written), ``failed: <message>`` (the job's
    ``error.txt``), ``incomplete`` (neither: the job was stopped or crashed) or ``zero-shot``.
    A test figure missing from ``metrics.json`` is taken from ``predictions_test.csv``.

    Args:
        sweep_dir: The sweep folder.
        bootstrap: Resamples of the intervals and p-values (0: none).
        seed: Seed of the resampling.
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for folder in _job_folders(sweep_dir):
        overrides = OmegaConf.to_container(OmegaConf.load(RunFolder(folder).overrides))
        metrics_file, error_file = RunFolder(folder).metrics, folder / ERROR_FILE
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        if metrics_file.exists():
            status = "ok"
        elif error_file.exists():
            status = "failed: " + error_file.read_text().strip()
        else:
            status = "incomplete"
        figures = prediction_figures(folder, bootstrap, seed)
        row = {
            "job": _job_number(folder),
            "overrides": " ".join(str(o) for o in overrides),
            "status": status,
            "method": metrics.get("method"),
            **_run_settings(folder),
            **{key: metrics.get(key) for key in METRIC_COLUMNS},
            **{key: figures[key] for key in STAT_COLUMNS},
            **{key: metrics.get(key) for key in RUN_COLUMNS},
            "run_folder": str(folder.relative_to(sweep_dir)),
        }
        for key in ("test/srcc", "test/plcc"):
            if row[key] is None:
                row[key] = figures[key]
        rows.append(row)
    rows.sort(key=lambda r: (r["job"] is None, r["job"] if r["job"] is not None else 0))
    zero_shot = _zero_shot_row(sweep_dir, rows, bootstrap, seed)
    return rows if zero_shot is None else [zero_shot, *rows]


def _cell(value: Any, column: str = "") -> str:
    """A markdown cell: 4 decimals (:data:`FORMATS` aside), an interval as ``[lo, hi]``."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
    if isinstance(value, float):
        return FORMATS.get(column, "{:.4f}").format(value)
    return str(value)


def _csv_cell(value: Any) -> Any:
    """A CSV cell at full precision: empty for None, an interval as ``[lo, hi]``."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return value


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``sweep_summary.csv`` (full precision) and ``sweep_summary.md`` (4 decimals)."""
    sweep_dir = Path(sweep_dir)
    csv_path, md_path = sweep_dir / SUMMARY_CSV, sweep_dir / SUMMARY_MD
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row[k]) for k in COLUMNS})
    jobs = job_rows(rows)
    lines = [
        f"# Sweep {sweep_dir.name}",
        "",
        f"{len(jobs)} job(s), {sum(r['status'] == 'ok' for r in jobs)} finished.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [_cell(row[k], k).replace("|", "\\|") for k in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


def summarize_sweep(
    sweep_dir: str | Path, bootstrap: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """Read a sweep folder and write its summary files and plots.

    Args:
        sweep_dir: The sweep folder.
        bootstrap: Resamples of the intervals and p-values (0: none).
        seed: Seed of the resampling.

    Returns:
        ``rows`` (:func:`read_sweep`), the paths ``csv``, ``md``, ``plot`` (SRCC against prompt
        size) and ``params_plot`` (SRCC against trainable parameters); a plot's path is None
        when it had nothing to show.
    """
    sweep_dir = Path(sweep_dir)
    rows = read_sweep(sweep_dir, bootstrap=bootstrap, seed=seed)
    csv_path, md_path = write_summary(sweep_dir, rows)
    title = f"sweep {sweep_dir.name}: test SRCC"
    plot = plot_srcc_vs_size(rows, sweep_dir / SRCC_PLOT, title)
    params_plot = plot_srcc_vs_params(rows, sweep_dir / PARAMS_PLOT, title)
    return {"rows": rows, "csv": csv_path, "md": md_path, "plot": plot, "params_plot": params_plot}


def _log_to_wandb(config: DictConfig, sweep_dir: Path, summary: dict[str, Any]) -> None:
    spec = OmegaConf.select(config, "logger.loggers.wandb", throw_on_resolution_failure=False)
    if spec is None:
        return
    import wandb

    offline = OmegaConf.select(config, "logger.offline", throw_on_resolution_failure=False)
    project = OmegaConf.select(spec, "project", throw_on_resolution_failure=False)
    run = wandb.init(
        project=project or "iqa-lightning",
        group=sweep_dir.name,
        name=f"{sweep_dir.name} summary",
        job_type="sweep_summary",
        dir=str(sweep_dir),
        mode="offline" if offline else "online",
        reinit="finish_previous",
    )
    table = wandb.Table(columns=list(COLUMNS))
    for row in summary["rows"]:
        table.add_data(*[_cell(row[k]) if isinstance(row[k], tuple) else row[k] for k in COLUMNS])
    logged: dict[str, Any] = {"sweep/summary": table}
    for key, name in (("plot", "srcc_vs_size"), ("params_plot", "srcc_vs_params")):
        if summary.get(key) is not None:
            logged[f"sweep/{name}"] = wandb.Image(str(summary[key]))
    run.log(logged)
    run.save(str(summary["csv"]), base_path=str(sweep_dir), policy="now")
    run.save(str(summary["md"]), base_path=str(sweep_dir), policy="now")
    run.finish()


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, write and log the sweep summary (module doc).

    Args:
        log_to_wandb: Log the table and plot to W&B when the sweep's logger includes W&B.
        fail_on_error: Exit with code 1 when a job ended on an error.
    """

    def __init__(self, log_to_wandb: bool = True, fail_on_error: bool = True) -> None:
        self.log_to_wandb = bool(log_to_wandb)
        self.fail_on_error = bool(fail_on_error)
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir or Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        summary = summarize_sweep(sweep_dir)
        rows = job_rows(summary["rows"])
        if self.log_to_wandb:
            try:
                _log_to_wandb(config, sweep_dir, summary)
            except Exception as err:  # the files are written; W&B is a copy
                log.warning("sweep summary: not logged to W&B (%s)", err)
        print(f"\nsweep summary: {summary['md']} ({len(rows)} job(s))", flush=True)
        failed = [r for r in rows if r["status"] != "ok"]
        if failed and self.fail_on_error:
            names = ", ".join(f"job {r['job']}" for r in failed)
            first = failed[0]["status"].removeprefix("failed: ")
            sys.stdout.flush()
            print(
                f"error: {len(failed)} of {len(rows)} sweep job(s) did not finish ({names}); "
                f"first: {first}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
