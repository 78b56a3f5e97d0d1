"""Shared fixtures: a small synthetic KADID-style set and the environment for subprocess runs."""

import os
import subprocess
import sys
from pathlib import Path

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
