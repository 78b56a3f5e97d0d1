"""Experiment loggers of the run folder.

:class:`CSVLogger` is Lightning's, but it appends to an existing ``csv/metrics.csv`` instead of
deleting it: a resumed run (:mod:`iqa_lightning.resume`) keeps the epochs logged before its
checkpoint.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.csv_logs import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, reading the header of an existing ``metrics.csv`` and appending
    to it (Lightning's deletes the file when it starts)."""

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            self.metrics_keys = list(next(csv.reader(f), []))


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
