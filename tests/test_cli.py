"""``python train.py`` through real subprocesses: the demo, a 4-run multirun, the run folder."""

import csv
import json
import subprocess
import sys

from safetensors.torch import load_file

from tests.conftest import FAST, REPO, run_train


def test_demo_prints_its_run_folder_and_figures(demo_run):
    out, proc = demo_run
    assert f"run folder: {out}" in proc.stdout
    assert "test/srcc=" in proc.stdout


def test_run_folder_contract(demo_run):
    out, _ = demo_run
    assert (out / ".hydra" / "config.yaml").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test/srcc", "test/plcc", "test/krcc", "val/srcc_best"):
        assert isinstance(metrics[key], float) and -1 <= metrics[key] <= 1, key

    with open(out / "split.csv", newline="") as f:
        split = list(csv.DictReader(f))
    assert {"train", "val", "test"} == {row["split"] for row in split}
    test_ids = {row["image_id"] for row in split if row["split"] == "test"}

    with open(out / "predictions_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image_id", "mos_raw", "target", "score"]
    assert {row["image_id"] for row in rows} == test_ids and len(rows) == len(test_ids)
    for row in rows:
        assert 1 <= float(row["mos_raw"]) <= 5
        assert 0 <= float(row["target"]) <= 1 and 0 <= float(row["score"]) <= 1

    tensors = load_file(out / "checkpoints" / "stage2" / "trainable.safetensors")
    assert set(tensors) == {
        "prompt.pad_up",
        "prompt.pad_down",
        "prompt.pad_left",
        "prompt.pad_right",
    }
    import torch

    for ckpt in (out / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert set(state) == set(tensors), "a checkpoint holds more than the trainable tensors"
        assert not any(k.startswith("backbone.") for k in state)

    assert (out / "plots" / "scatter_test.png").stat().st_size > 1000
    assert (out / "plots" / "prompt.png").stat().st_size > 100
    assert list((out / "wandb").glob("offline-run-*")), "no offline W&B run"
    assert (out / "csv" / "metrics.csv").exists()


def test_multirun_gives_four_runs(run_env, tmp_path):
    run_train(
        [
            "-m",
            *FAST,
            "trainer.max_epochs=1",
            "logger=csv",
            "prompt=padding,patch_center",
            "prompt.size=10,30",
            f"hydra.sweep.dir={tmp_path}",
        ],
        run_env,
    )
    runs = sorted(p.parent for p in tmp_path.glob("*/metrics.json"))
    assert len(runs) == 4
    seen = set()
    for run in runs:
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        prompt = "patch_center" if "prompt=patch_center" in overrides else "padding"
        size = 10 if "prompt.size=10" in overrides else 30
        seen.add((prompt, size))
        tensors = load_file(run / "checkpoints" / "stage2" / "trainable.safetensors")
        count = sum(t.numel() for t in tensors.values())
        expected = 3 * size**2 if prompt == "patch_center" else 3 * (64**2 - (64 - 2 * size) ** 2)
        assert count == expected
    assert len(seen) == 4


def test_bad_config_value_is_reported_by_key(run_env, tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", *FAST, "prompt.mode=sub", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "prompt.mode='sub'" in proc.stderr


def test_notebook_executes_against_the_demo_run(demo_run, run_env):
    import nbformat
    from nbclient import NotebookClient

    out, _ = demo_run
    nb = nbformat.read(REPO / "notebooks" / "inspect_runs.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "commit notebooks stripped"
    import os

    os.environ["IQA_RUN"] = str(out)
    try:
        NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        ).execute()
    finally:
        del os.environ["IQA_RUN"]
    text = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
        for c in nb.cells
        for o in c.get("outputs", [])
    )
    assert "1 run(s)" in text and "test/srcc" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2


def test_stage2_padding_on_a_koniq_layout(run_env, tmp_path):
    """The command from the project card, on a KonIQ-10k fixture: official split, stage=2."""
    from tests.data.fixtures import koniq_set_of, write_koniq

    root = write_koniq(tmp_path / "koniq 10k", n_images=40)
    out = tmp_path / "run"
    run_train(
        [
            "experiment=demo",
            "prompt=padding",
            "dataset=koniq",
            "stage=2",
            f"dataset.root={root}",
            "dataset.num_workers=0",
            "trainer.max_epochs=1",
            "logger=csv",
            f"hydra.run.dir={out}",
        ],
        run_env,
    )
    with open(out / "split.csv", newline="") as f:
        split = {row["image_id"]: row["split"] for row in csv.DictReader(f)}
    official = {"training": "train", "validation": "val", "test": "test"}
    names = [f"{10004473376 + 7919 * i}.jpg" for i in range(40)]
    expected = {n: official[koniq_set_of(i)] for i, n in enumerate(names)}
    assert {k.split("/")[-1]: v for k, v in split.items()} == expected
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/srcc"] is not None
