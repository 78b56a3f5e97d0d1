"""What a driver prints: each line once, no third-party advertisements or known library noise,
and the run's figures last.

Every driver (train, eval, analyze, ...) calls :func:`quiet` once it has checked its config,
before it builds a Trainer or opens a W&B run:

- **Each Lightning line once.** Lightning gives its ``lightning`` logger a console handler of
  its own (``INFO: ...``) and lets its loggers propagate to the root logger, where Hydra's
  handler prints them again (``[time][lightning...][INFO] - ...``). Under a configured root
  logger the Lightning loggers lose their own handlers and propagate, so Hydra's handler (and
  its log file) alone shows them; a Lightning INFO line already shown in this call (``GPU
  available: ...`` for each Trainer the run builds) is not shown again.
- **No advertisements.** Lightning's ``💡 Tip: ...`` lines (litlogger, litmodels) are dropped.
- **Known noise only.** The warnings of :data:`NOISE_WARNINGS` are ignored: each is listed with
  why it is noise. Every other warning, the project's own included, is shown as before.
- **Figures last.** W&B runs quietly (``WANDB_QUIET=true`` unless the environment sets it):
  no run history or summary is printed when a run finishes, so the run's own figures are the
  last lines a driver prints. ``WANDB_QUIET=false`` brings W&B's summary back. (The W&B logger
  of ``conf/logger/wandb.yaml``, :class:`iqa_lightning.wandb_logger.WandbLogger`, also spares
  wandb's warning about a setting Lightning passes.)

Light to import (the standard library only; Lightning is imported when :func:`quiet` runs).
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["LIGHTNING_LOGGERS", "NOISE_MESSAGES", "NOISE_WARNINGS", "NoiseFilter", "quiet"]

#: (message pattern, why it is noise) of the library warnings no driver shows.
NOISE_WARNINGS = (
    (r"Found \d+ module\(s\) in eval mode", "Lightning: the frozen backbone stays in eval mode"),
    (r"Metric `\w+` will save all targets", "torchmetrics: SRCC/KRCC keep every score by design"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning's _pytree on newer torch"),
)
#: Starts of Lightning log messages that advertise other products.
NOISE_MESSAGES = ("💡 Tip:",)
#: Loggers with a console handler of their own (the packages' ``__init__``).
LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
)
_LIGHTNING_PREFIXES = tuple(name + "." for name in LIGHTNING_LOGGERS) + LIGHTNING_LOGGERS


class NoiseFilter(logging.Filter):
    """Drops Lightning's advertisements and Lightning INFO lines already passed once (a record
    passed by one handler is passed by the others: the console and the log file agree)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_LIGHTNING_PREFIXES):
            return True
        # One decision per record, whichever of the handlers (console, log file) asks first.
        mark = f"_iqa_noise_{id(self)}"
        if mark not in record.__dict__:
            record.__dict__[mark] = self._decide(record)
        return record.__dict__[mark]

    def _decide(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(NOISE_MESSAGES):
            return False
        if record.levelno != logging.INFO:
            return True
        key = (record.name, message)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def quiet() -> NoiseFilter:
    """Set up the driver's output as the module docstring says; call it again in each run of a
    process (a multirun's jobs) to start the once-only record afresh.

    Returns:
        The filter now on the handlers.
    """
    for pattern, _why in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_QUIET", "true")
    import lightning.pytorch  # noqa: F401  (its import adds the console handlers handled here)

    root = logging.getLogger()
    handlers = list(root.handlers)
    for name in LIGHTNING_LOGGERS:
        if name not in logging.Logger.manager.loggerDict:
            continue
        logger = logging.getLogger(name)
        if root.handlers:  # Hydra's (or the caller's) handler shows every line
            logger.handlers.clear()
            logger.propagate = True
        handlers += logger.handlers
    noise = NoiseFilter()
    for handler in handlers:
        for old in [f for f in handler.filters if isinstance(f, NoiseFilter)]:
            handler.removeFilter(old)
        handler.addFilter(noise)
    return noise
