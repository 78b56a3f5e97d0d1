"""What the drivers print (iqa_lightning/quiet.py): each Lightning line once, no tips, no known
library noise, and the run's figures last. The demo run prints as a user's would (no
WANDB_SILENT, no PYTHONWARNINGS: tests/conftest.py's ``demo_run``)."""

import io
import logging
import os
import re
import warnings

import pytest

from iqa_lightning.quiet import LIGHTNING_LOGGERS, NoiseFilter, quiet

#: A line of Hydra's console log: ``[time][logger][LEVEL] - message``.
LOG_LINE = re.compile(r"^\[[\d\- :,]+\]\[([\w.]+)\]\[(\w+)\] - (.*)$")


def test_the_demo_prints_each_line_once_without_noise_and_its_figures_last(demo_run):
    _, proc = demo_run
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in lines if line.startswith("INFO: ")], "Lightning's own handler"
    logged = [m.group(1, 3) for line in lines if (m := LOG_LINE.match(line))]
    lightning = [message for name, message in logged if name.startswith("lightning")]
    assert lightning, "Lightning's lines are shown, through Hydra's handler"
    repeated = {m for m in lightning if lightning.count(m) > 1}
    assert not repeated, repeated
    assert not [line for line in lines if "Tip:" in line or "litlogger" in line]
    library_warnings = [line for line in lines if re.search(r"site-packages/.*\.py:\d+: ", line)]
    assert not library_warnings, library_warnings
    assert "anonymous setting" not in proc.stderr
    for footer in ("Run history", "Run summary", "wandb sync", "Find logs at"):
        assert footer not in proc.stderr, f"W&B's closing lines ({footer}) after the figures"
    last = proc.stdout.rstrip().splitlines()[-1]
    assert last.startswith("val/") and "test/srcc=" in last, last


@pytest.fixture
def hydra_like_logging(monkeypatch):
    """A root handler as Hydra's job logging sets one (into a string); the Lightning loggers'
    handlers and the root handlers' filters restored afterwards."""
    monkeypatch.delenv("WANDB_QUIET", raising=False)
    import lightning.pytorch  # noqa: F401  (adds Lightning's console handler)

    saved = {}
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate)
    root = logging.getLogger()
    filters = {h: list(h.filters) for h in root.handlers}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # as Hydra's job logging
    yield stream
    root.setLevel(level)
    root.removeHandler(handler)
    for h, kept in filters.items():
        h.filters[:] = kept
    for name, (handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate


def handlers_reached(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of ``logger`` goes through (as ``Logger.callHandlers`` walks)."""
    found = []
    while logger is not None:
        found += logger.handlers
        logger = logger.parent if logger.propagate else None
    return found


def test_lightning_lines_reach_the_root_handler_only_once_each(hydra_like_logging):
    logging.getLogger("lightning").addHandler(logging.StreamHandler(io.StringIO()))  # its own
    log_file = logging.StreamHandler(io.StringIO())  # Hydra's second handler: <run>/train.log
    log_file.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(log_file)
    quiet()
    root = logging.getLogger()
    for name in ("lightning", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        assert handlers_reached(logging.getLogger(name)) == root.handlers, name
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for _ in range(2):  # two Trainers: their lines once
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("💡 Tip: For seamless cloud logging, try installing [litlogger](...)")
        logging.getLogger("iqa_lightning").info("data checked: train 70")
    rank_zero.warning("a Lightning warning")
    rank_zero.warning("a Lightning warning")
    assert hydra_like_logging.getvalue().splitlines() == [
        "[lightning.pytorch.utilities.rank_zero][INFO] - GPU available: False, used: False",
        "[iqa_lightning][INFO] - data checked: train 70",
        "[iqa_lightning][INFO] - data checked: train 70",
        "[lightning.pytorch.utilities.rank_zero][WARNING] - a Lightning warning",
        "[lightning.pytorch.utilities.rank_zero][WARNING] - a Lightning warning",
    ]
    assert log_file.stream.getvalue() == hydra_like_logging.getvalue(), "the log file agrees"
    logging.getLogger().removeHandler(log_file)
    quiet()  # the next run of the process (a multirun job): its lines are shown again
    rank_zero.info("GPU available: False, used: False")
    assert hydra_like_logging.getvalue().count("GPU available") == 2
    assert sum(isinstance(f, NoiseFilter) for f in root.handlers[-1].filters) == 1


def test_known_library_noise_is_ignored_and_other_warnings_are_not(hydra_like_logging):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet()
        warnings.warn("Found 3 module(s) in eval mode during training", stacklevel=1)
        warnings.warn("Metric `SpearmanCorrCoef` will save all targets", stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("synthetic: references in more than one split", stacklevel=1)
        warnings.warn("some other deprecation", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "synthetic: references in more than one split",
        "some other deprecation",
    ]
    assert os.environ["WANDB_QUIET"] == "true", "no W&B summary after the figures"


def test_the_wandb_logger_passes_anonymous_only_when_given(tmp_path):
    from iqa_lightning.wandb_logger import WandbLogger

    assert "anonymous" not in WandbLogger(save_dir=str(tmp_path), offline=True)._wandb_init
    given = WandbLogger(save_dir=str(tmp_path), offline=True, anonymous=True)
    assert given._wandb_init["anonymous"] == "allow"
