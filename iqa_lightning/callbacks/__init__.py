"""Lightning callbacks: prediction files, plots (and the stage schedule)."""

from iqa_lightning.callbacks.plots import PlotWriter
from iqa_lightning.callbacks.predictions import PredictionWriter

__all__ = ["PlotWriter", "PredictionWriter"]
