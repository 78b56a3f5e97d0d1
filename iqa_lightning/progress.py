"""Progress of long work (teacher texts, analyses, image checks, scoring), readable on a terminal
and in a log file alike.

    from iqa_lightning.progress import Progress, track

    for batch in track(loader, "teacher texts", total=len(dataset), unit="images", size=len_of):
        ...
    with Progress("scoring", total=480, unit="images") as progress:
        for batch in loader:
            ...
            progress.update(len(batch))

Every :class:`Progress` logs an INFO line through :mod:`logging` at most every ``every``
seconds (default 30; the environment variable ``IQA_PROGRESS_SECONDS`` changes the default)::

    teacher texts: 120/480 images (25%), 3.1/s, ETA 1m56s

and, when the work ends, a final line (``teacher texts: 480/480 images in 2m35s (3.1/s)``, or
``stopped at 120/480 images after 40s`` when it ends early). So a log file (``<run>/train.log``,
Hydra's ``<job>.log``) shows how far a long step is and when it will end. On a terminal (stderr
is a TTY) a tqdm bar is drawn as well, and while it is drawn the console handlers of the root
logger write through tqdm so a log line never tears the bar.

Work that does not know its end (``total=None``) logs ``<what>: 120 images, 3.1/s``. A part of
the code that does not own the progress (a step inside a batch) advances the innermost active
one with :func:`current` (a no-op object when none is active).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["Progress", "current", "format_duration", "format_rate", "log_every", "track"]

T = TypeVar("T")

#: Seconds between two periodic lines unless ``every`` says otherwise.
DEFAULT_EVERY = 30.0
ENV_EVERY = "IQA_PROGRESS_SECONDS"

_log = logging.getLogger("iqa_lightning.progress")
_active: list[Progress] = []


def log_every() -> float:
    """The default seconds between two lines: ``$IQA_PROGRESS_SECONDS`` or 30."""
    value = os.environ.get(ENV_EVERY, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_EVERY
    except ValueError:
        return DEFAULT_EVERY
    return seconds if seconds >= 0 and math.isfinite(seconds) else DEFAULT_EVERY


def format_duration(seconds: float) -> str:
    """``45s``, ``1m56s``, ``2h03m``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_rate(rate: float) -> str:
    """Units per second: ``31/s``, ``3.1/s``, ``0.062/s``."""
    if rate >= 10:
        return f"{rate:.0f}/s"
    if rate >= 1:
        return f"{rate:.1f}/s"
    return f"{rate:.2g}/s"


def _count(value: float) -> str:
    return str(int(value)) if value == int(value) or value > 10 else f"{value:.1f}"


class Progress:
    """Count, rate and ETA of one piece of work, logged and (on a TTY) drawn.

    Args:
        what: What the work is (the start of every line): ``"teacher texts"``.
        total: How many units the work has; None when unknown.
        unit: The unit's name (``"images"``, ``"steps"``).
        every: Seconds between two periodic lines (default :func:`log_every`); 0 logs on every
            update.
        bar: Draw a tqdm bar: True, False, or None for "when stderr is a TTY".
        logger: Where the lines go (default ``iqa_lightning.progress``).
        enabled: False makes every call a no-op (e.g. on a DDP rank other than 0).
        final: Log the final line (False where the caller logs its own summary).
        note: Called when a line is logged; its text is appended (``"loss 0.0123"``).
        ambient: What :func:`current` gives while open (False for a count that is never closed,
            such as the image cache's).
        clock: Seconds (default :func:`time.monotonic`).
    """

    def __init__(
        self,
        what: str,
        total: float | None = None,
        unit: str = "",
        every: float | None = None,
        bar: bool | None = None,
        logger: logging.Logger | None = None,
        enabled: bool = True,
        final: bool = True,
        note: Callable[[], str] | None = None,
        ambient: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = None if total is None or not math.isfinite(total) else total
        self.unit = unit
        self.every = log_every() if every is None else float(every)
        self.logger = logger or _log
        self.enabled = enabled
        self.final = final
        self.note = note
        self.clock = clock
        self.count = 0.0
        self.start = self.last = clock()
        self.closed = False
        self._bar = None
        self._redirect = None
        if enabled and (bar if bar is not None else _stderr_is_tty()):
            self._open_bar()
        if enabled and ambient:
            _active.append(self)

    # ------------------------------------------------------------------ the bar
    def _open_bar(self) -> None:
        try:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm
        except ImportError:  # pragma: no cover - tqdm comes with Lightning
            return
        total = None if self.total is None else int(math.ceil(self.total))
        self._bar = tqdm(total=total, desc=self.what, unit=f" {self.unit}" if self.unit else "it",
                         leave=False, dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()

    def _draw(self) -> None:
        if self._bar is not None:
            step = int(self.count) - self._bar.n
            if step > 0:
                self._bar.update(step)

    # ------------------------------------------------------------------ counting
    def update(self, n: float = 1) -> None:
        """``n`` more units done."""
        if self.enabled and not self.closed:
            self.count += n
            self._after_update()

    def goto(self, count: float) -> None:
        """``count`` units done in all (never goes back)."""
        if self.enabled and not self.closed and count > self.count:
            self.count = count
            self._after_update()

    def _after_update(self) -> None:
        self._draw()
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.logger.info("%s", self.line(now))

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def rate(self, now: float | None = None) -> float:
        """Units per second since the start."""
        seconds = (self.clock() if now is None else now) - self.start
        return self.count / seconds if seconds > 0 else 0.0

    def _amount(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{_count(self.count)}{unit}"
        return f"{_count(self.count)}/{_count(self.total)}{unit}"

    def _with_note(self, text: str) -> str:
        extra = self.note() if self.note is not None else ""
        return f"{text}, {extra}" if extra else text

    def line(self, now: float | None = None) -> str:
        """``<what>: 120/480 images (25%), 3.1/s, ETA 1m56s``."""
        now = self.clock() if now is None else now
        rate = self.rate(now)
        parts = [self._amount()]
        if self.total:
            parts[0] += f" ({100.0 * self.count / self.total:.0f}%)"
        parts.append(format_rate(rate))
        if self.total is not None:
            left = max(self.total - self.count, 0)
            parts.append(f"ETA {format_duration(left / rate) if rate > 0 else '?'}")
        return self._with_note(f"{self.what}: " + ", ".join(parts))

    def final_line(self) -> str:
        """``<what>: 480/480 images in 2m35s (3.1/s)``, or ``stopped at ...`` when unfinished."""
        now = self.clock()
        took, rate = format_duration(now - self.start), format_rate(self.rate(now))
        if self.total is not None and self.count < self.total:
            text = f"{self.what}: stopped at {self._amount()} after {took} ({rate})"
        else:
            text = f"{self.what}: {self._amount()} in {took} ({rate})"
        return self._with_note(text)

    def close(self) -> None:
        """End the work: the final line (once), the bar removed."""
        if self.closed or not self.enabled:
            self.closed = True
            return
        self.closed = True
        if self in _active:
            _active.remove(self)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self.final:
            self.logger.info("%s", self.final_line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _NoProgress:
    """What :func:`current` gives when no progress is active: every call does nothing."""

    count = 0.0
    total = None

    def update(self, n: float = 1) -> None:
        pass

    def goto(self, count: float) -> None:
        pass


def current() -> Progress | _NoProgress:
    """The innermost active :class:`Progress` (a no-op object when there is none)."""
    return _active[-1] if _active else _NoProgress()


def track(
    items: Iterable[T],
    what: str,
    total: float | None = None,
    unit: str = "",
    size: Callable[[T], float] | None = None,
    **options: Any,
) -> Iterator[T]:
    """Yield ``items``, counting each one (or ``size(item)`` units) once the caller is done
    with it; see :class:`Progress` for ``options``.

    Args:
        items: The work.
        what: What it is.
        total: Units in all; default ``len(items)`` when it has one (with ``size`` unset).
        unit: The unit's name.
        size: Units of one item (e.g. the images of a batch); default 1.
    """
    if total is None and size is None:
        with contextlib.suppress(TypeError):
            total = len(items)  # type: ignore[arg-type]
    with Progress(what, total=total, unit=unit, **options) as progress:
        for item in items:
            yield item
            progress.update(size(item) if size is not None else 1)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
