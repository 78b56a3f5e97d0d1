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

    sweep_summary.csv / .md     one row per job: overrides, status, val/test SRCC and PLCC,
                                trainable parameters, run folder
    sweep_srcc_vs_size.png      test SRCC against prompt size, one line per prompt type

and logs them to a W&B run of the sweep's group when the sweep logs to W&B. A job that ended on
a user error (see :mod:`iqa_lightning.cli`) is listed as failed; the sweep then exits with
code 1 after the summary, its last line naming the failed jobs.
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

log = logging.getLogger(__name__)

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
SRCC_PLOT = "sweep_srcc_vs_size.png"
METRIC_COLUMNS = ("val/srcc", "val/plcc", "val/srcc_best", "test/srcc", "test/plcc")
COLUMNS = (
    "job",
    "overrides",
    "status",
    "dataset",
    "prompt",
    "prompt_size",
    "prompt_mode",
    *METRIC_COLUMNS,
    "trainable_parameters",
    "run_folder",
)

__all__ = [
    "COLUMNS",
    "GridSweeper",
    "SweepSummary",
    "plot_srcc_vs_size",
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
    folders = [p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")]
    return [f for f in folders if f != sweep_dir]


def _job_number(folder: Path) -> int | None:
    hydra_file = folder / ".hydra" / "hydra.yaml"
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
    hydra_file, config_file = folder / ".hydra" / "hydra.yaml", folder / ".hydra" / "config.yaml"
    if hydra_file.exists():
        choices = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices") or {}
        out["prompt"] = choices.get("prompt")
        out["dataset"] = choices.get("dataset")
    if config_file.exists():
        config = OmegaConf.load(config_file)
        for key, column in (("prompt.size", "prompt_size"), ("prompt.mode", "prompt_mode")):
            out[column] = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    return out


def read_sweep(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep (columns :data:`COLUMNS`), in job order.

    ``status`` is ``ok`` (``metrics.json`` written), ``failed: <message>`` (the job's
    ``error.txt``) or ``incomplete`` (neither: the job was stopped or crashed).
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for folder in _job_folders(sweep_dir):
        overrides = OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        metrics_file, error_file = folder / "metrics.json", folder / ERROR_FILE
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        if metrics_file.exists():
            status = "ok"
        elif error_file.exists():
            status = "failed: " + error_file.read_text().strip()
        else:
            status = "incomplete"
        row = {
            "job": _job_number(folder),
            "overrides": " ".join(str(o) for o in overrides),
            "status": status,
            **_run_settings(folder),
            **{key: metrics.get(key) for key in METRIC_COLUMNS},
            "trainable_parameters": metrics.get("trainable_parameters"),
            "run_folder": str(folder.relative_to(sweep_dir)),
        }
        rows.append(row)
    rows.sort(key=lambda r: (r["job"] is None, r["job"] if r["job"] is not None else 0))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``sweep_summary.csv`` (full precision) and ``sweep_summary.md`` (4 decimals)."""
    sweep_dir = Path(sweep_dir)
    csv_path, md_path = sweep_dir / SUMMARY_CSV, sweep_dir / SUMMARY_MD
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    lines = [
        f"# Sweep {sweep_dir.name}",
        "",
        f"{len(rows)} job(s), {sum(r['status'] == 'ok' for r in rows)} finished.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [_cell(row[k]).replace("|", "\\|") for k in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


def srcc_vs_size_figure(rows: list[dict[str, Any]], title: str = ""):
    """Test SRCC against prompt size, one line per prompt type (and per prompt mode and dataset
    where those vary across the sweep); None when no finished job has both a prompt size and a
    test SRCC. Overlay prompts (no size) are left out: they are in the summary table."""
    done = [r for r in rows if r.get("status") == "ok"]
    varies = [k for k in ("prompt_mode", "dataset") if len({r.get(k) for r in done}) > 1]
    points: dict[str, list[tuple[float, float]]] = {}
    for row in done:
        size, srcc = row.get("prompt_size"), row.get("test/srcc")
        if size is None or srcc is None:
            continue
        label = " ".join(str(row.get(k) or "?") for k in ("prompt", *varies))
        points.setdefault(label, []).append((float(size), float(srcc)))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=100, layout="constrained")
    for label, values in sorted(points.items()):
        values.sort()
        ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=label)
    ax.set_xlabel("prompt.size (px)")
    ax.set_ylabel("test SRCC")
    ax.set_title(title or "test SRCC by prompt size", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title=" / ".join(["prompt", *varies]), fontsize=8)
    return fig


def plot_srcc_vs_size(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Write :func:`srcc_vs_size_figure` to ``path``; None when there is nothing to plot."""
    fig = srcc_vs_size_figure(rows, title)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def summarize_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """Read a sweep folder and write its summary files; returns the rows and the paths."""
    sweep_dir = Path(sweep_dir)
    rows = read_sweep(sweep_dir)
    csv_path, md_path = write_summary(sweep_dir, rows)
    plot = plot_srcc_vs_size(rows, sweep_dir / SRCC_PLOT, f"sweep {sweep_dir.name}: test SRCC")
    return {"rows": rows, "csv": csv_path, "md": md_path, "plot": plot}


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
        table.add_data(*[row[k] if row[k] is not None else None for k in COLUMNS])
    logged: dict[str, Any] = {"sweep/summary": table}
    if summary["plot"] is not None:
        logged["sweep/srcc_vs_size"] = wandb.Image(str(summary["plot"]))
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
        rows = summary["rows"]
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
