"""Shared fixtures: a small synthetic KADID-style set, the environment for subprocess runs, and
:func:`run_main` to run a driver's entry point in this process."""

import contextlib
import importlib
import logging
import os
import random
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache folder for the whole session, so the synthetic set is generated once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def run_env(cache_dir, tmp_path_factory) -> dict:
    """Environment for ``python train.py`` subprocesses: offline, quiet, shared cache, run
    folders (and outputs/failed/) under a temporary root rather than the repository's."""
    env = dict(os.environ)
    env.update(
        IQA_ROOT=str(tmp_path_factory.mktemp("root")),
        IQA_CACHE_DIR=str(cache_dir),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        HF_HUB_OFFLINE="1",
        PYTHONWARNINGS="ignore",
    )
    return env


# Shorter than the demo itself, same code path.
FAST = [
    "experiment=smoke",
    "dataset.n_refs=4",
    "dataset.generated_size=96",
    "trainer.max_epochs=2",
]


def run_train(args, env, timeout=600, entry=("train.py",)):
    """Run ``python train.py ARGS`` (or another entry point) and fail with its output."""
    proc = subprocess.run(
        [sys.executable, *entry, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


#: Set by :func:`run_env` (or the caller) to keep subprocesses quiet; a user has none of them.
QUIETING_ENV = ("WANDB_SILENT", "WANDB_QUIET", "PYTHONWARNINGS")


@pytest.fixture(scope="session")
def demo_run(run_env, tmp_path_factory):
    """The demo (shortened) with its default loggers: W&B offline and CSV, printing what a user
    sees (none of :data:`QUIETING_ENV`; tests/test_quiet.py reads its output)."""
    out = tmp_path_factory.mktemp("demo_run")
    env = {k: v for k, v in run_env.items() if k not in QUIETING_ENV}
    proc = run_train([*FAST, f"hydra.run.dir={out}"], env)
    return out, proc


@dataclass
class Ended:
    """How an entry point run by :func:`run_main` ended: its exit code and what it printed."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def last_line(self) -> str:
        """The last non-empty line on stderr (where a driver's ``error:`` line goes)."""
        return [line for line in self.err.splitlines() if line.strip()][-1]


@contextlib.contextmanager
def _process_state_kept():
    """Put back what a driver sets for its own process: the environment, the working folder,
    logging (Hydra's handlers and levels, :func:`iqa_lightning.quiet.quiet`'s changes to
    Lightning's loggers, the streams of console handlers), warning filters, torch's threads and
    the random generators."""
    environ, cwd = dict(os.environ), os.getcwd()
    loggers = [logging.root, *(lg for lg in logging.root.manager.loggerDict.values()
                               if isinstance(lg, logging.Logger))]  # fmt: skip
    kept = [(lg, list(lg.handlers), list(lg.filters), lg.level, lg.propagate, lg.disabled)
            for lg in loggers]  # fmt: skip
    # Console handlers a library made when it was imported (Lightning's ``INFO: ...``) write to
    # the run's stderr, as they would in a fresh process.
    consoles = {
        h: h.stream for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler
    }
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    rng = random.getstate(), np.random.get_state(), torch and torch.get_rng_state()
    try:
        for handler in consoles:
            handler.stream = sys.stderr  # not setStream: it flushes the old one, maybe closed
        with warnings.catch_warnings():
            yield
    finally:
        for handler, stream in consoles.items():
            handler.stream = stream
        for lg, handlers, filters, level, propagate, disabled in kept:
            for handler in lg.handlers:
                if handler not in handlers:
                    handler.close()  # Hydra's train.log of the run
            lg.handlers[:], lg.filters[:] = handlers, filters
            lg.level, lg.propagate, lg.disabled = level, propagate, disabled
        if threads is not None:
            torch.set_num_threads(threads)
            torch.set_rng_state(rng[2])  # seed_everything seeded the run: later tests as before
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)


def run_main(entry, args, capsys, env=None) -> Ended:
    """Run a driver's entry point (``"iqa_lightning.train"``: its ``main()``) in this process, as
    ``python -m ENTRY ARGS`` would in a fresh one: ``sys.argv`` set, ``env`` (e.g. :func:`run_env`)
    as the environment, its exit code (0 when it returns) and what it printed (``capsys``).

    It spares the ~5-9 s of imports a subprocess costs where the process boundary is not what a
    test checks; whatever the driver sets for its own process is put back afterwards."""
    main = importlib.import_module(entry).main
    capsys.readouterr()  # what came before is not the run's
    argv = sys.argv
    with _process_state_kept():
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
            if env.get("PYTHONWARNINGS") == "ignore":  # as a fresh interpreter would read it
                warnings.simplefilter("ignore")
        sys.argv = [entry.rsplit(".", 1)[-1] + ".py", *args]
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            sys.argv = argv
    captured = capsys.readouterr()
    return Ended(code, captured.out, captured.err)
