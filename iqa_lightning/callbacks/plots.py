"""Plots for the run folder (and W&B): predicted-vs-MOS scatter, the learned prompt and, for
score heads over quality levels, the predicted level distribution of a few test images beside
the distribution they were trained towards (their rating histogram or soft label).

Both name the run in their title, so a plot copied out of its folder (or shown in a W&B
panel beside others) still says where it comes from.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402

from iqa_lightning.strategies import full_parameters  # noqa: E402

ZERO_SHOT_FILE = "predictions_zeroshot_test.csv"  # written by iqa_lightning.zero_shot


def _correlations(rows: list[dict]) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    mos = np.asarray([r["mos_raw"] for r in rows], dtype=np.float64)
    score = np.asarray([r["score"] for r in rows], dtype=np.float64)
    if len(rows) < 2 or np.ptp(mos) == 0 or np.ptp(score) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(score, mos)[0]), float(pearsonr(score, mos)[0])


def _titled(run_name: str, line: str, width: int) -> str:
    """The run's name (wrapped at ``width`` characters) above ``line``."""
    if not run_name:
        return line
    return "\n".join([*textwrap.wrap(run_name, width, break_on_hyphens=False), line])


def scatter_figure(
    rows: list[dict], run_name: str = "", split: str = "test", baseline: list[dict] | None = None
):
    """Predicted score against raw MOS, one point per image; the title names the run and
    gives SRCC and PLCC over these rows.

    Args:
        rows: Dicts with ``mos_raw`` and ``score`` (``predictions_test.csv`` rows).
        run_name: The run, as the title shows it.
        split: The split the rows come from.
        baseline: The same images scored zero-shot (``predictions_zeroshot_test.csv`` rows),
            drawn in grey behind the tuned scores, with their figures in the legend.

    Returns:
        The matplotlib figure (the caller saves and closes it).
    """
    srcc, plcc = _correlations(rows)
    fig, ax = plt.subplots(figsize=(5.0, 5.0), dpi=100, layout="constrained")
    if baseline:
        zs_srcc, zs_plcc = _correlations(baseline)
        ax.scatter(
            [r["mos_raw"] for r in baseline], [r["score"] for r in baseline], s=10, alpha=0.5,
            color="0.6", label=f"zero-shot: SRCC {zs_srcc:.3f}  PLCC {zs_plcc:.3f}",
        )  # fmt: skip
    ax.scatter(
        [r["mos_raw"] for r in rows], [r["score"] for r in rows], s=10, alpha=0.7,
        label=f"tuned: SRCC {srcc:.3f}  PLCC {plcc:.3f}",
    )  # fmt: skip
    if baseline:
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("MOS")
    ax.set_ylabel("predicted score")
    figures = f"{split}: SRCC {srcc:.3f}  PLCC {plcc:.3f}  (n={len(rows)})"
    ax.set_title(_titled(run_name, figures, 60), fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def prompt_figure(prompt, image: torch.Tensor | None = None, run_name: str = ""):
    """The learned prompt at the model's input size, beside a real image with and without it.

    Panels: the image as the model receives it, the same image with the prompt applied, the
    prompt applied to mid-grey, and the prompt's pixel change (mean over RGB) with a colour
    scale. Axes count pixels of the model's input.

    Args:
        prompt: A pixel prompt (has ``render()`` and ``image_size``).
        image: ``[3, R, R]`` pixels in [0, 1] at the model's input size; None: only the
            prompt panels.
        run_name: The run, as the title shows it.

    Returns:
        The matplotlib figure, or None for a prompt with nothing to show (no ``render``).
    """
    if not hasattr(prompt, "render"):
        return None
    size = int(prompt.image_size)
    rendered = prompt.render().float().clamp(0, 1)
    change = (rendered - 0.5).mean(0).numpy()
    panels = []
    if image is not None:
        image = image.detach().float().cpu()
        with torch.no_grad():
            device = next(prompt.parameters()).device
            prompted = prompt(image[None].to(device))[0].float().cpu()
        panels += [("test image (model input)", image), ("with the prompt", prompted)]
    panels.append(("prompt on mid-grey", rendered))
    fig, axes = plt.subplots(
        1, len(panels) + 1, figsize=(3.4 * (len(panels) + 1) + 0.6, 4.2), layout="constrained"
    )
    for ax, (title, pixels) in zip(axes, panels, strict=False):
        ax.imshow(
            pixels.permute(1, 2, 0).numpy(), interpolation="nearest", extent=(0, size, size, 0)
        )
        ax.set_title(title, fontsize=9)
    ax = axes[-1]
    limit = float(np.abs(change).max()) or 1e-6
    shown = ax.imshow(
        change, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest",
        extent=(0, size, size, 0),
    )  # fmt: skip
    ax.set_title("pixel change (mean over RGB)", fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="change in [0, 1] units")
    for ax in axes:
        ax.set_xticks([0, size // 2, size])
        ax.set_yticks([0, size // 2, size])
        ax.set_xlabel("px")
    kind = type(prompt).__name__
    detail = f"{kind}, {getattr(prompt, 'mode', '')} mode, {size}x{size} px input"
    fig.suptitle(_titled(run_name, detail, 110), fontsize=10)
    return fig


def level_words(rows: list[dict]) -> list[str]:
    """The score words whose predicted probabilities the rows carry (``p_<word>`` columns)."""
    return [key[2:] for key in (rows[0] if rows else {}) if key.startswith("p_")]


def pick_spread(rows: list[dict], count: int) -> list[dict]:
    """``count`` rows spread evenly over the MOS order, lowest and highest included."""
    ordered = sorted(rows, key=lambda r: (r["mos_raw"], r["image_id"]))
    if len(ordered) <= count:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[i] for i in dict.fromkeys(picks.tolist())]


def distribution_figure(rows: list[dict], run_name: str = "", count: int = 6):
    """Predicted level distribution (``p_<word>``) of ``count`` test images spread over the MOS
    range, each beside its target distribution (``target_<word>``) where the rows carry one.

    Args:
        rows: ``predictions_test.csv`` rows with ``p_<word>`` columns.
        run_name: The run, as the title shows it.
        count: Images shown, one panel each.

    Returns:
        The matplotlib figure, or None when the rows carry no level probabilities.
    """
    words = level_words(rows)
    if not words:
        return None
    picked = pick_spread(rows, count)
    with_target = all(f"target_{w}" in picked[0] for w in words)
    fig, axes = plt.subplots(
        1, len(picked), figsize=(2.6 * len(picked), 3.2), sharey=True, layout="constrained",
        squeeze=False,
    )  # fmt: skip
    x = np.arange(len(words))
    width = 0.4 if with_target else 0.8
    for ax, row in zip(axes[0], picked, strict=True):
        ax.bar(x - width / 2 if with_target else x, [row[f"p_{w}"] for w in words], width,
               label="predicted")  # fmt: skip
        if with_target:
            ax.bar(x + width / 2, [row[f"target_{w}"] for w in words], width, label="target")
        ax.set_xticks(x, words, rotation=45, fontsize=7)
        ax.set_title(f"{row['image_id']}\nMOS {row['mos_raw']:.3g}, score {row['score']:.3f}",
                     fontsize=8)  # fmt: skip
    axes[0][0].set_ylabel("probability")
    axes[0][0].legend(fontsize=7)
    detail = "level distributions: predicted" + (" vs target" if with_target else "")
    fig.suptitle(_titled(run_name, detail, 110), fontsize=9)
    return fig


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` as ``path`` (folders made) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def scatter_plot(
    rows: list[dict], path: Path, title: str = "", baseline: list[dict] | None = None
) -> Path:
    """Write :func:`scatter_figure` of ``rows`` (and the zero-shot ``baseline``) to ``path``;
    ``title`` names the run."""
    return save_figure(scatter_figure(rows, title, baseline=baseline), path)


def read_baseline(path: Path) -> list[dict] | None:
    """Rows of a zero-shot predictions file (``mos_raw`` and ``score`` as floats), or None."""
    if not path.is_file():
        return None
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [
            {"mos_raw": float(r["mos_raw"]), "score": float(r["score"])} for r in csv.DictReader(f)
        ]


def prompt_image(
    prompt, path: Path, image: torch.Tensor | None = None, run_name: str = ""
) -> Path | None:
    """Write :func:`prompt_figure` to ``path``; None for prompts with nothing to show."""
    fig = prompt_figure(prompt, image, run_name)
    return None if fig is None else save_figure(fig, path)


class PlotWriter(L.Callback):
    """After testing, writes ``plots/scatter_test.png``, ``plots/prompt.png`` and, where the test
    rows carry level probabilities, ``plots/distributions_test.png``; logs them to W&B
    (``test/scatter``, ``prompt/image``, ``test/distributions``).

    Args:
        output_dir: The run folder.
        run_name: How the plots name the run (default: the run folder's name).
    """

    def __init__(self, output_dir: str, run_name: str | None = None) -> None:
        self.plot_dir = Path(output_dir) / "plots"
        self.run_name = run_name or Path(output_dir).name
        self._image: torch.Tensor | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._image = None

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        # Keep one real test image (a scored batch, not instruction data) for the prompt plot.
        if self._image is None and isinstance(batch, dict) and "target" in batch:
            self._image = batch["pixels"][0].detach().float().cpu()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The module's rows, gathered across ranks by the module itself at its test epoch end.
        if not pl_module.test_rows:
            return
        with full_parameters(trainer):  # every rank takes part: FSDP gathers the prompt
            prompt = None
            if trainer.is_global_zero:
                prompt = prompt_image(
                    pl_module.prompt, self.plot_dir / "prompt.png", self._image, self.run_name
                )
        if not trainer.is_global_zero:
            return
        images = {
            "test/scatter": scatter_plot(
                pl_module.test_rows,
                self.plot_dir / "scatter_test.png",
                self.run_name,
                read_baseline(self.plot_dir.parent / ZERO_SHOT_FILE),
            )
        }
        if prompt is not None:
            images["prompt/image"] = prompt
        levels = distribution_figure(pl_module.test_rows, self.run_name)
        if levels is not None:
            images["test/distributions"] = save_figure(
                levels, self.plot_dir / "distributions_test.png"
            )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for key, path in images.items():
                    logger.log_image(key=key, images=[str(path)])


__all__ = [
    "PlotWriter",
    "distribution_figure",
    "prompt_figure",
    "prompt_image",
    "save_figure",
    "scatter_figure",
]
