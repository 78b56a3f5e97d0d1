"""Shared fixtures: a small synthetic KADID-style set and the environment for subprocess runs."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache folder for the whole session, so the synthetic set is generated once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def run_env(cache_dir) -> dict:
    """Environment for ``python train.py`` subprocesses: offline, quiet, shared cache."""
    env = dict(os.environ)
    env.update(
        IQA_CACHE_DIR=str(cache_dir),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        HF_HUB_OFFLINE="1",
        PYTHONWARNINGS="ignore",
    )
    return env
