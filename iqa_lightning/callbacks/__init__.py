"""Lightning callbacks: the stage schedule, prediction files, plots, explanations, seeding,
progress lines in the log file."""

from iqa_lightning.callbacks.explanations import ExplanationWriter
from iqa_lightning.callbacks.plots import PlotWriter
from iqa_lightning.callbacks.predictions import PredictionWriter
from iqa_lightning.callbacks.progress import ProgressLog
from iqa_lightning.callbacks.seeding import EpochSeed
from iqa_lightning.callbacks.stages import StageSchedule

__all__ = [
    "EpochSeed",
    "ExplanationWriter",
    "PlotWriter",
    "PredictionWriter",
    "ProgressLog",
    "StageSchedule",
]
