"""Two-stage Q-Adapt runs through ``python train.py``: progressive, and stage 2 from a stage-1 run."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import run_train

SMALL = [
    "experiment=smoke",
    "prompt=qadapt_tiny",
    "prompt.num_layers=1",
    "dataset.n_refs=4",
    "dataset.generated_size=96",
    "instruct.n_refs=4",
    "instruct.generated_size=96",
    "instruct.steps_per_epoch=4",
    "logger=csv",
]
LORA = ["stage.lora.r=4", "stage.lora.alpha=8"]


# slow: tests/test_stages.py runs the progressive schedule in-process; tests/test_learning.py -m slow trains it
@pytest.mark.slow
def test_progressive_demo_reports_scores_and_mcq_accuracy(run_env, tmp_path):
    out = tmp_path / "run"
    proc = run_train(
        [*SMALL, *LORA, "stage=progressive", "stage.phases.stage1.epochs=1", "trainer.max_epochs=2",
         f"hydra.run.dir={out}"],
        run_env,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test/srcc", "test/plcc", "test/mcq_acc", "val/mcq_acc"):
        assert metrics[key] is not None and -1 <= metrics[key] <= 1, key
    assert any(k.startswith("test/mcq_acc/type/") for k in metrics)
    assert "test/mcq_acc=" in proc.stdout

    stage1 = load_file(out / "checkpoints" / "stage1" / "trainable.safetensors")
    stage2 = load_file(out / "checkpoints" / "stage2" / "trainable.safetensors")
    tuned = load_file(out / "checkpoints" / "tuned.safetensors")
    assert stage1 and all(".lora_" in k for k in stage1)
    assert stage2 and all(k.startswith("prompter.") for k in stage2)
    for name, tensor in stage1.items():  # stage 2 left the stage-1 LoRA bit-identical
        assert torch.equal(tuned[name], tensor), name
    with open(out / "explanations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["image_id"] for r in rows)


# slow: two training runs; tests/test_stages.py loads a stage-1 run's tensors in-process
@pytest.mark.slow
def test_stage2_starts_from_a_stage1_run(run_env, tmp_path):
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    run_train([*SMALL, *LORA, "stage=1", "trainer.max_epochs=1", f"hydra.run.dir={first}"], run_env)
    run_train(
        [*SMALL, "stage=2", f"stage.init_from={first}", "trainer.max_epochs=1",
         "prompt_optimizer.lr=1e-3", f"hydra.run.dir={second}"],
        run_env,
    )  # fmt: skip
    first_tuned = load_file(first / "checkpoints" / "tuned.safetensors")
    tuned = load_file(second / "checkpoints" / "tuned.safetensors")
    # Stage 1 trained LoRA (its untrained prompter is saved too, and left behind by stage 2).
    lora = {k: v for k, v in first_tuned.items() if "lora_" in k}
    assert lora and set(lora) <= set(tuned)
    for name, tensor in lora.items():
        assert torch.equal(tuned[name], tensor), name
    assert any(k.startswith("prompter.") for k in tuned)
    assert json.loads((second / "checkpoints" / "lora.json").read_text())["r"] == 4
