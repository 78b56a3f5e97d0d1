"""How the drivers (train / eval / score) end on a user error.

A user error (a bad config value, a missing dataset folder, a corrupt image, a malformed
annotation file) ends the run with one line, the last one printed on stderr, and exit code 1:

    error: cannot load image '/data/kadid/images/I01_01_01.png': truncated file

The traceback goes to the run's log file (``<run folder>/<task>.log``), not to the terminal;
``IQA_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` print it as well. Experiment loggers (W&B) are closed
before the line is printed, so their closing lines come above it. Anything else (a bug) keeps
Hydra's usual traceback.

Use it under ``hydra.main`` in every driver:

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    @report_user_errors
    def _hydra_main(cfg): ...

In a multirun a failing job does not stop the sweep: its message goes to ``error.txt`` in the
job's folder, the next job runs, and the sweep ends with exit code 1 once every job has run
(see :mod:`iqa_lightning.sweeps`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iqa_lightning.errors import USER_ERRORS, ConfigError

__all__ = [
    "ERROR_FILE",
    "USER_ERROR_TYPES",
    "ConfigError",
    "close_experiment_loggers",
    "debug_requested",
    "error_line",
    "is_user_error",
    "report_user_errors",
    "user_error",
]

ERROR_FILE = "error.txt"
#: Set on an exception that left a task function (not an error of Hydra's composition).
TASK_MARK = "_iqa_raised_by_task"
DEBUG_ENV = ("IQA_DEBUG", "HYDRA_FULL_ERROR")
_PACKAGE_DIR = Path(__file__).resolve().parent

log = logging.getLogger("iqa_lightning")


def debug_requested() -> bool:
    """True when ``IQA_DEBUG`` or ``HYDRA_FULL_ERROR`` asks for full tracebacks."""
    return any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_ENV)


#: The project's own error types (:mod:`iqa_lightning.errors`, which imports nothing heavy: the
#: error path stays free of torch).
USER_ERROR_TYPES = USER_ERRORS
#: ``OSError`` numbers of a place the user cannot write: permission denied, read-only.
UNWRITABLE = (errno.EACCES, errno.EROFS, errno.EPERM)


_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def _in_package(filename: str) -> bool:
    try:
        Path(filename).resolve().relative_to(_PACKAGE_DIR)
    except (ValueError, OSError):
        return False
    return True


def _raised_in_package(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is this package's code (for an error
    a DataLoader worker re-raised, the innermost frame of the worker's traceback)."""
    text = str(exc)
    if _WORKER_TRACEBACK in text:
        frames = re.findall(r'^\s*File "([^"]+)", line \d+', text, flags=re.MULTILINE)
        return bool(frames) and _in_package(frames[-1])
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _in_package(tb.tb_frame.f_code.co_filename)


def _message(exc: BaseException) -> str:
    """``exc``'s own message; for an error re-raised from a DataLoader worker (whose message is
    "Caught X in DataLoader worker process N" and the worker's traceback), the original one."""
    text = str(exc).strip()
    if _WORKER_TRACEBACK not in text:
        return text
    lines = text.split(_WORKER_TRACEBACK, 1)[1].splitlines()
    for index, line in enumerate(lines):
        if line.strip() and not line[:1].isspace():
            original = "\n".join([line, *lines[index + 1 :]])
            return re.sub(r"^[\w.]+: ", "", original, count=1).strip()
    return text


def user_error(exc: BaseException) -> BaseException | None:
    """The user error behind ``exc``, or None when ``exc`` is a bug.

    User errors are this project's own error types (:data:`iqa_lightning.errors.USER_ERRORS`:
    :class:`ConfigError`, ``AnnotationError``, ``ImageLoadError``, ``SplitError``,
    ``InstructFormatError``, ``UnsafeCheckpointError``) and the ``ValueError`` /
    ``FileNotFoundError`` raised by the project's checks (not by a library underneath). Hydra's
    ``InstantiationException`` is looked through to the error of the constructor it called.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, USER_ERROR_TYPES):
            return exc
        if isinstance(exc, (ValueError, FileNotFoundError)) and _raised_in_package(exc):
            return exc
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
            return exc  # a read-only or forbidden folder: the user's to fix
        if type(exc).__name__ == "InstantiationException":
            exc = exc.__cause__
            continue
        return None
    return None


def is_user_error(exc: BaseException) -> bool:
    """True when ``exc`` is (or wraps) a user error; see :func:`user_error`."""
    return user_error(exc) is not None


def error_line(exc: BaseException) -> str:
    """``exc``'s message on one line, prefixed with ``error: ``.

    A message over several lines (a list of files, then a hint) is joined: indented lines are
    list items and are joined with ``, ``; other lines are joined as sentences.
    """
    text = _message(exc) or type(exc).__name__
    out = ""
    in_list = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        item = raw[:1].isspace()
        if not out:
            out = line
        elif item:
            out += (", " if in_list else " ") + line
        else:
            out += ("; " if in_list else ("" if out.endswith((".", ":", ";")) else ".")) + " "
            out += line
        in_list = item
    return "error: " + re.sub(r"\s+", " ", out)


def close_experiment_loggers(exit_code: int = 1) -> None:
    """Finish an open W&B run (its closing lines are printed now, not at exit)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish(exit_code=exit_code)
        except Exception as err:  # closing must never hide the error being reported
            log.warning("could not close the W&B run: %s", err)
    sys.stdout.flush()
    sys.stderr.flush()


def _log_files() -> list[Path]:
    files = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            files.append(Path(handler.baseFilename))
    return files


def _write_traceback_to_log_files(exc: BaseException) -> list[Path]:
    """Append the traceback to every log file of the root logger (not to the console)."""
    text = "".join(traceback.format_exception(exc))
    written = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            try:
                handler.acquire()
                try:
                    stream = handler.stream or handler._open()
                    handler.stream = stream
                    stream.write(text)
                    stream.flush()
                finally:
                    handler.release()
                written.append(Path(handler.baseFilename))
            except OSError:
                pass
    return written


def _job_info() -> tuple[bool, Path | None, str]:
    """(multirun?, the job's output folder, the job's overrides as one string)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        out = Path(hc.runtime.output_dir) if hc.runtime.output_dir else None
        overrides = " ".join(hc.overrides.task)
    except Exception:  # outside a Hydra app (or a config composed without its runtime)
        return False, None, ""
    if multirun:
        overrides = f"job {hc.job.num} ({overrides})" if overrides else f"job {hc.job.num}"
    return multirun, out, overrides


def report_user_errors(task_function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Hydra task function so a user error ends it as described in this module."""

    @functools.wraps(task_function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task_function(*args, **kwargs)
        except Exception as exc:
            cause = user_error(exc)
            close_experiment_loggers(exit_code=1)
            if cause is None or debug_requested():
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(exc, TASK_MARK, True)  # iqa_lightning.hydra_entry: not Hydra's
                raise
            multirun, out, job = _job_info()
            line = error_line(cause)
            logs = _write_traceback_to_log_files(exc)
            if multirun:
                if out is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    (out / ERROR_FILE).write_text(line[len("error: ") :] + "\n")
                line = f"error: {job}: {line[len('error: ') :]}"
                # The sweep goes on; iqa_lightning.sweeps ends it with exit code 1.
                print(line, file=sys.stderr, flush=True)
                return None
            where = f" (traceback in {logs[0]}; IQA_DEBUG=1 prints it)" if logs else ""
            print(f"{type(cause).__name__}{where}:", file=sys.stderr)
            print(line, file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    return wrapper
