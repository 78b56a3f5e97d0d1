"""Scale and survive, through real processes: 2-process CPU DDP evaluation equals a single
process, and a run killed with SIGKILL resumes (``ckpt_path=last``) to the same results."""

import csv
import json
import math
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from iqa_lightning.callbacks import PredictionWriter
from iqa_lightning.checkpoints import SafeCheckpointIO, load_checkpoint
from iqa_lightning.train import build_datamodule, build_module
from tests.conftest import FAST, REPO, run_train

QUICK = [*FAST, "logger=csv", "callbacks.explanations=null"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def best_checkpoint(out):
    metrics = json.loads((out / "metrics.json").read_text())
    return out / metrics["best_checkpoint"], metrics


def single_process_test(run, out):
    """Test the run's best checkpoint again in this process, on one device."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    ckpt, _ = best_checkpoint(run)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        plugins=[SafeCheckpointIO()], callbacks=[PredictionWriter(str(out))],
    )  # fmt: skip
    results = trainer.test(
        build_module(cfg), datamodule=build_datamodule(cfg), ckpt_path=str(ckpt), verbose=False
    )
    return results[0], read_rows(out / "predictions_test.csv")


def test_ddp_sim_evaluates_every_image_once_with_single_process_figures(tmp_path, run_env):
    run = tmp_path / "ddp"
    run_train([*QUICK, "trainer=ddp_sim", "trainer.max_epochs=1", f"hydra.run.dir={run}"], run_env)
    assert (run / "train_ddp_process_1.log").exists(), "the second DDP process did not run"

    split = read_rows(run / "split.csv")
    test_ids = sorted(r["image_id"] for r in split if r["split"] == "test")
    assert len(test_ids) % 2 == 1, "an odd test split makes DistributedSampler padding visible"
    rows = read_rows(run / "predictions_test.csv")
    assert sorted(r["image_id"] for r in rows) == test_ids

    _, metrics = best_checkpoint(run)
    single, single_rows = single_process_test(run, tmp_path / "single")
    for key in ("test/srcc", "test/plcc", "test/krcc", "test/srcc_plcc"):
        # Padding would move these by ~1e-3; float rounding of the scores by ~1e-8.
        assert math.isclose(metrics[key], single[key], rel_tol=1e-6, abs_tol=1e-9), key
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in single_rows]
    for ddp_row, one_row in zip(rows, single_rows, strict=True):
        assert math.isclose(float(ddp_row["score"]), float(one_row["score"]), abs_tol=1e-6)
        assert ddp_row["mos_raw"] == one_row["mos_raw"]


# slow: a DDP run killed and resumed in subprocesses; tests/test_checkpoints.py resumes in-process
@pytest.mark.slow
def test_kill_9_then_resume_from_last_reproduces_the_uninterrupted_run(tmp_path, run_env):
    # MKL's results otherwise depend on memory alignment: two uninterrupted runs can differ.
    run_env = {**run_env, "MKL_CBWR": "AUTO,STRICT"}
    args = [*QUICK, "trainer.max_epochs=3"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_train([*args, f"hydra.run.dir={full}"], run_env)

    last = killed / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args, f"hydra.run.dir={killed}"],
        cwd=REPO, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert load_checkpoint(last)["epoch"] == 0, "killed after the first epoch-end checkpoint"
    assert not (killed / "metrics.json").exists()

    run_train([*args, f"hydra.run.dir={killed}", "ckpt_path=last"], run_env)
    expected = json.loads((full / "metrics.json").read_text())
    resumed = json.loads((killed / "metrics.json").read_text())
    figures = [k for k in expected if k.startswith(("test/", "val/"))]
    assert {k: resumed[k] for k in figures} == {k: expected[k] for k in figures}
    assert resumed["epochs"] == expected["epochs"]
    assert (killed / "predictions_test.csv").read_text() == (
        full / "predictions_test.csv"
    ).read_text()


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["gpu", "gpu_bf16_true"])
def test_one_gpu_presets_run_the_demo(preset, tmp_path, run_env):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    run_train([*QUICK, f"trainer={preset}", f"hydra.run.dir={tmp_path}"], run_env)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(isinstance(metrics[k], float) for k in ("test/srcc", "test/plcc"))


@pytest.mark.gpu
def test_fsdp_on_two_gpus_scores_every_image_once_and_saves_whole_tensors(tmp_path, run_env):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    run = tmp_path / "fsdp"
    args = [*QUICK, "trainer=fsdp", "trainer.devices=2", "trainer.max_epochs=1"]
    run_train([*args, f"hydra.run.dir={run}"], run_env)
    split = read_rows(run / "split.csv")
    test_ids = sorted(r["image_id"] for r in split if r["split"] == "test")
    assert sorted(r["image_id"] for r in read_rows(run / "predictions_test.csv")) == test_ids
    tuned = load_file(run / "checkpoints" / "tuned.safetensors")
    ckpt, _ = best_checkpoint(run)
    state = load_checkpoint(ckpt)["state_dict"]
    assert set(state) == set(tuned) and all(k.startswith("prompt.") for k in tuned)
    module = build_module(OmegaConf.load(run / ".hydra" / "config.yaml"))
    for name, tensor in tuned.items():
        assert tensor.shape == module.get_parameter(name).shape == state[name].shape, name
