"""Plots for the run folder (and W&B): predicted-vs-MOS scatter and the learned prompt."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402

from iqa_lightning.strategies import full_parameters  # noqa: E402


def scatter_plot(rows: list[dict], path: Path, title: str = "") -> Path:
    """Scatter of predicted score against raw MOS, one point per image."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.scatter([r["mos_raw"] for r in rows], [r["score"] for r in rows], s=10, alpha=0.7)
    ax.set_xlabel("MOS")
    ax.set_ylabel("predicted score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def prompt_image(prompt, path: Path) -> Path | None:
    """Save the prompt applied to mid-grey as a PNG; None for prompts with nothing to show."""
    if not hasattr(prompt, "render"):
        return None
    image = prompt.render().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image)
    return path


class PlotWriter(L.Callback):
    """After testing, writes ``plots/scatter_test.png`` and ``plots/prompt.png``; logs both to W&B.

    Args:
        output_dir: The run folder.
    """

    def __init__(self, output_dir: str) -> None:
        self.plot_dir = Path(output_dir) / "plots"

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not pl_module.test_rows:
            return
        with full_parameters(trainer):  # every rank takes part: FSDP gathers the prompt
            prompt = None
            if trainer.is_global_zero:
                prompt = prompt_image(pl_module.prompt, self.plot_dir / "prompt.png")
        if not trainer.is_global_zero:
            return
        srcc = trainer.callback_metrics.get("test/srcc")
        title = f"test SRCC {float(srcc):.3f}" if srcc is not None else ""
        images = {
            "test/scatter": scatter_plot(
                pl_module.test_rows, self.plot_dir / "scatter_test.png", title
            )
        }
        if prompt is not None:
            images["prompt/image"] = prompt
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for key, path in images.items():
                    logger.log_image(key=key, images=[str(path)])
