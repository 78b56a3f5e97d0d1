"""The phase switch under real 2-process CPU DDP keeps every rank's parameters identical."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from iqa_lightning.data import SyntheticDataModule
from tests.conftest import REPO

SCRIPT = REPO / "tests" / "ddp" / "stage_switch.py"


def run(out, cache_dir, env, *flags):
    SyntheticDataModule(cache_dir=cache_dir, n_refs=5, image_size=64).prepare_data()
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(cache_dir), *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


# slow: DDP training runs by default in tests/test_scale.py; the phase switch in-process in tests/test_checkpoints.py
@pytest.mark.slow
def test_ranks_stay_identical_across_the_switch(tmp_path, cache_dir, run_env):
    proc = run(tmp_path, cache_dir, run_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert set(rank0) == set(rank1) and any(".lora_" in k for k in rank0)
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name
    # The prompt trained in stage 2 (it moved away from its initial value on both ranks alike).
    stage1 = load_file(tmp_path / "checkpoints" / "stage1" / "trainable.safetensors")
    for name, tensor in stage1.items():
        assert torch.equal(tensor, rank0[name]), f"stage 2 changed the stage-1 tensor {name}"


# The control experiment: without the re-wrap the ranks drift, so the test above can fail.
@pytest.mark.slow
def test_the_naive_switch_does_not_keep_ranks_in_sync(tmp_path, cache_dir, run_env):
    """Control: flipping requires_grad after DDP wrapped the model lets the ranks drift apart.

    The unfrozen prompt was never registered with DDP's reducer, so each rank steps on its own
    gradients; this is what the test above would catch if the schedule did the same.
    """
    proc = run(tmp_path, cache_dir, run_env, "--naive")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    prompt = [k for k in rank0 if k.startswith("prompt.")]
    assert not all(torch.equal(rank0[k], rank1[k]) for k in prompt)
