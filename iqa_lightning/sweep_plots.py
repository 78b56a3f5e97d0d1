"""Figures of a sweep summary (rows of :func:`iqa_lightning.sweeps.read_sweep`).

- :func:`srcc_vs_size_figure`: test SRCC against prompt size, one line per prompt type
  (``sweep_srcc_vs_size.png``); finished runs it cannot place (an overlay prompt has no size)
  are named in a note under the plot and in a log line.
- :func:`srcc_vs_params_figure`: test SRCC against trainable parameters, one point per run
  labelled by its method, with its bootstrap interval, and the zero-shot model as a dashed line
  (``sweep_srcc_vs_params.png``).
"""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path
from typing import Any

from iqa_lightning.sweep_stats import ZERO_SHOT

log = logging.getLogger(__name__)

__all__ = [
    "ZERO_SHOT",
    "plot_srcc_vs_params",
    "plot_srcc_vs_size",
    "save_figure",
    "srcc_vs_params_figure",
    "srcc_vs_size_figure",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _run_label(row: dict[str, Any]) -> str:
    """``job 6 (overlay, SRCC 0.812)``: how a note names a run."""
    job = f"job {row['job']}" if row.get("job") is not None else str(row.get("run_folder") or "?")
    srcc = row.get("test/srcc")
    figure = "" if srcc is None else f", SRCC {float(srcc):.3f}"
    return f"{job} ({row.get('prompt') or '?'}{figure})"


def srcc_vs_size_figure(rows: list[dict[str, Any]], title: str = ""):
    """Test SRCC against prompt size, one line per prompt type (and per prompt mode and dataset
    where those vary across the sweep); None when no finished job has both a prompt size and a
    test SRCC. A finished job without a prompt size (overlay prompts cover the whole image) or
    without a test SRCC cannot be placed: a note under the plot and a log line name it (its
    figures are in the summary table)."""
    done = [r for r in rows if r.get("status") == "ok"]
    varies = [k for k in ("prompt_mode", "dataset") if len({r.get(k) for r in done}) > 1]
    points: dict[str, list[tuple[float, float]]] = {}
    left_out: dict[str, list[dict[str, Any]]] = {"no prompt size": [], "no test SRCC": []}
    for row in done:
        size, srcc = row.get("prompt_size"), row.get("test/srcc")
        if size is None or srcc is None:
            left_out["no prompt size" if size is None else "no test SRCC"].append(row)
            continue
        label = " ".join(str(row.get(k) or "?") for k in ("prompt", *varies))
        points.setdefault(label, []).append((float(size), float(srcc)))
    if not points:
        return None
    fig, ax = _pyplot().subplots(figsize=(5.5, 4.0), dpi=100, layout="constrained")
    for label, values in sorted(points.items()):
        values.sort()
        ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=label)
    ax.set_xlabel("prompt.size (px)")
    ax.set_ylabel("test SRCC")
    ax.set_title(title or "test SRCC by prompt size", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title=" / ".join(["prompt", *varies]), fontsize=8)
    notes = [
        f"{', '.join(_run_label(r) for r in runs)}: {why}" for why, runs in left_out.items() if runs
    ]
    if notes:
        note = "not on the plot (in the summary table): " + "; ".join(notes)
        # Under the x label, inside the axes' layout box (constrained layout makes room for it).
        ax.annotate(textwrap.fill(note, 90), xy=(0, 0), xycoords="axes fraction",
                    xytext=(0, -36), textcoords="offset points", va="top", ha="left",
                    fontsize=7, annotation_clip=False)  # fmt: skip
        log.info("sweep_srcc_vs_size.png: %s", note)
    return fig


def _interval(row: dict[str, Any], srcc: float) -> tuple[float, float] | None:
    """(below, above) error-bar lengths from the row's ``test_srcc_ci``; None without one."""
    ci = row.get("test_srcc_ci")
    if not ci or not all(math.isfinite(v) for v in ci):
        return None
    return max(0.0, srcc - ci[0]), max(0.0, ci[1] - srcc)


def srcc_vs_params_figure(rows: list[dict[str, Any]], title: str = ""):
    """Test SRCC against trainable parameters (log axis), one point per finished run labelled by
    its method (and dataset where that varies), with its bootstrap interval as a vertical bar;
    the zero-shot row (status ``zero-shot``) as a horizontal dashed line over its interval.

    None when no finished job has a method, a test SRCC and a positive parameter count (a log
    axis has no 0).
    """
    done = [r for r in rows if r.get("status") == "ok" and r.get("method")]
    points = [
        r
        for r in done
        if r.get("test/srcc") is not None and (r.get("trainable_parameters") or 0) > 0
    ]
    if not points:
        return None
    with_dataset = len({r.get("dataset") for r in points}) > 1
    colours = {m: f"C{i % 10}" for i, m in enumerate(sorted({r["method"] for r in points}))}
    fig, ax = _pyplot().subplots(figsize=(6.0, 4.2), dpi=100, layout="constrained")
    for row in points:
        x, y = float(row["trainable_parameters"]), float(row["test/srcc"])
        bar = _interval(row, y)
        ax.errorbar(
            [x], [y], yerr=None if bar is None else [[bar[0]], [bar[1]]],
            fmt="o", capsize=3, color=colours[row["method"]],
        )  # fmt: skip
        label = f"{row['method']} ({row.get('dataset')})" if with_dataset else row["method"]
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    zero = next((r for r in rows if r.get("status") == ZERO_SHOT), None)
    if zero is not None and zero.get("test/srcc") is not None:
        y = float(zero["test/srcc"])
        ax.axhline(y, linestyle="--", color="0.4", label=f"zero-shot ({y:.3f})")
        ci = zero.get("test_srcc_ci")
        if ci and all(math.isfinite(v) for v in ci):
            ax.axhspan(ci[0], ci[1], color="0.4", alpha=0.12, linewidth=0)
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15)  # room for the labels of the outermost points
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("test SRCC (95% bootstrap interval)")
    ax.set_title(title or "test SRCC by trainable parameters", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


def save_figure(fig, path: str | Path) -> Path | None:
    """Write ``fig`` to ``path`` and close it; None (nothing written) when ``fig`` is None."""
    if fig is None:
        return None
    path = Path(path)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def plot_srcc_vs_size(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Write :func:`srcc_vs_size_figure` to ``path``; None when there is nothing to plot."""
    return save_figure(srcc_vs_size_figure(rows, title), path)


def plot_srcc_vs_params(
    rows: list[dict[str, Any]], path: str | Path, title: str = ""
) -> Path | None:
    """Write :func:`srcc_vs_params_figure` to ``path``; None when there is nothing to plot."""
    return save_figure(srcc_vs_params_figure(rows, title), path)
