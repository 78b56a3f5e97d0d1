"""``python train.py ... stage=perception_inference`` and the one-stage baseline as subprocesses."""

import csv
import json

import pytest

from tests.conftest import FAST, run_train


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # a subprocess; in-process: tests/test_perception.py (the module's phases),
# test_stages' progressive run (the phase switch in a Trainer), test_run_fixtures (a
# perception_inference run folder rebuilt and scored)
def test_perception_inference_switches_phases_and_writes_the_run_folder(run_env, tmp_path):
    out = tmp_path / "pi"
    run_train(
        [
            *FAST, "stage=perception_inference", "stage.phases.perception.epochs=1", "logger=none",
            "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1", "inference.max_new_tokens=8",
            "callbacks.explanations=null", "callbacks.plots=null", f"hydra.run.dir={out}",
        ],
        run_env,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test/srcc", "test/plcc", "val/loss_describe"} <= set(metrics)
    for phase in ("perception", "inference"):
        assert (out / "checkpoints" / phase / "trainable.safetensors").is_file()
    assert (out / "checkpoints" / "tuned.safetensors").is_file()
    predictions = _rows(out / "predictions_test.csv")
    described = _rows(out / "descriptions_test.csv")
    assert predictions and [r["image_id"] for r in described] == [
        r["image_id"] for r in predictions
    ]
    assert all(r["description"] for r in described)


@pytest.mark.slow
def test_demo_two_stage_and_baseline_runs(run_env, tmp_path):
    """The full demo of both methods, then stage 2 alone from the two-stage run."""
    two = tmp_path / "two_stage"
    run_train(["experiment=smoke", "stage=perception_inference", f"hydra.run.dir={two}"], run_env)
    one = tmp_path / "one_stage"
    run_train(["experiment=smoke", "stage=one_stage", f"hydra.run.dir={one}"], run_env)
    for run in (two, one):
        assert "test/srcc" in json.loads((run / "metrics.json").read_text())
    again = tmp_path / "inference"
    run_train(
        ["experiment=smoke", "stage=inference", f"stage.init_from={two}",
         "trainer.max_epochs=1", f"hydra.run.dir={again}"],
        run_env,
    )  # fmt: skip
    assert (again / "descriptions_test.csv").is_file()
