"""Lightning callbacks: the stage schedule, prediction files, plots, explanations."""

from iqa_lightning.callbacks.explanations import ExplanationWriter
from iqa_lightning.callbacks.plots import PlotWriter
from iqa_lightning.callbacks.predictions import PredictionWriter
from iqa_lightning.callbacks.stages import StageSchedule

__all__ = ["ExplanationWriter", "PlotWriter", "PredictionWriter", "StageSchedule"]
