"""``python train.py`` through real subprocesses: the demo, a 4-run multirun, the run folder."""

import csv
import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.conftest import FAST, REPO, run_main, run_train


def test_demo_prints_its_run_folder_and_figures(demo_run):
    out, proc = demo_run
    assert f"run folder: {out}" in proc.stdout
    assert "test/srcc=" in proc.stdout


def test_test_table_has_one_column_and_full_names(demo_run):
    _, proc = demo_run
    assert "DataLoader" not in proc.stdout
    lines = proc.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("test metric")))
    names = [line.split()[0] for line in lines[start + 2 : start + 6]]
    assert names == ["test/krcc", "test/plcc", "test/srcc", "test/srcc_plcc"]


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
    # the contract's four columns, then the score head's distribution: p_<word> per level word
    columns = list(rows[0])
    assert columns[:4] == ["image_id", "mos_raw", "target", "score"]
    assert columns[4:] and all(c.startswith("p_") for c in columns[4:])
    probs = [sum(float(row[c]) for c in columns[4:]) for row in rows]
    assert probs == pytest.approx([1.0] * len(rows), abs=1e-4)
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


def wandb_records(run_file):
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``).

    The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks, each with
    a 7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_run_of(folder):
    """(group, tags, config keys) of the one offline W&B run under ``folder``."""
    (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    group, tags, keys = None, [], set()
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            group, tags = record.run.run_group, list(record.run.tags)
        elif kind == "config":
            keys |= {item.key for item in record.config.update}
    return group, tags, keys


# slow: four training runs; tests/test_sweeps.py runs a multirun and its summary quickly
@pytest.mark.slow
def test_multirun_gives_four_runs_a_wandb_group_and_a_summary(run_env, tmp_path):
    sweep = tmp_path / "sweep_grid"
    run_train(
        [
            "-m",
            *FAST,
            "trainer.max_epochs=1",
            "logger.loggers.csv=null",  # W&B only (offline)
            "prompt=padding,patch_center",
            "prompt.size=10,30",
            f"hydra.sweep.dir={sweep}",
        ],
        run_env,
    )
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
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
        # One W&B group per sweep; the job's overrides as tags and as config keys.
        group, tags, keys = wandb_run_of(run)
        assert group == "sweep_grid"
        assert f"prompt={prompt}" in tags and f"prompt.size={size}" in tags and "smoke" in tags
        assert "sweep" in keys
    assert len(seen) == 4

    # The sweep summary: one row per job, the figures of each job's metrics.json.
    with open(sweep / "sweep_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        metrics = json.loads((sweep / row["run_folder"] / "metrics.json").read_text())
        overrides = (sweep / row["run_folder"] / ".hydra" / "overrides.yaml").read_text()
        assert row["status"] == "ok"
        assert f"prompt={row['prompt']}" in overrides
        assert f"prompt.size={row['prompt_size']}" in overrides
        for key in ("val/srcc", "val/plcc", "test/srcc", "test/plcc"):
            assert float(row[key]) == metrics[key], key
        assert int(row["trainable_parameters"]) == metrics["trainable_parameters"]
    markdown = (sweep / "sweep_summary.md").read_text()
    assert markdown.count("| ok |") == 4
    assert (sweep / "sweep_srcc_vs_size.png").stat().st_size > 1000
    # ... and logged to W&B, in the sweep's group.
    group, _, _ = wandb_run_of(sweep)
    assert group == "sweep_grid"
    assert list(sweep.glob("wandb/offline-run-*/files/media/table/sweep/summary_*.table.json"))


def test_bad_prompt_mode_is_a_user_error_naming_the_key():
    """In-process equivalent of the slow CLI test below."""
    from hydra.utils import instantiate

    from iqa_lightning.cli import error_line, user_error

    spec = {"_target_": "iqa_lightning.models.prompts.PaddingPrompt", "image_size": 64,
            "size": 8, "mode": "sub"}  # fmt: skip
    with pytest.raises(Exception) as info:
        instantiate(spec)
    cause = user_error(info.value)
    assert cause is not None and error_line(cause).startswith("error: prompt.mode='sub'")


@pytest.mark.slow  # a subprocess; test_bad_prompt_mode_is_a_user_error_naming_the_key above
def test_bad_config_value_is_reported_by_key(run_env, tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", *FAST, "prompt.mode=sub", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: prompt.mode='sub'") and "Traceback" not in proc.stderr


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


# slow: the KonIQ layout is read in-process by tests/data/test_conformance.py; the CLI by the demo run
@pytest.mark.slow
def test_stage2_padding_on_a_koniq_layout(run_env, tmp_path):
    """The command from the project card, on a KonIQ-10k fixture: official split, stage=2."""
    from tests.data.fixtures import koniq_set_of, write_koniq

    root = write_koniq(tmp_path / "koniq 10k", n_images=40)
    out = tmp_path / "run"
    run_train(
        [
            "experiment=smoke",
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


def test_help_is_the_apps_own(run_env, capsys):
    """``python train.py --help``, run in this process."""
    ended = run_main("iqa_lightning.train", ["--help"], capsys, env=run_env)
    assert ended.code == 0, ended.text[-3000:]
    text = ended.out
    assert text.startswith("iqa-lightning train: train a large multimodal model")
    assert "is powered by Hydra" not in text
    groups = dict(
        line.split(": ", 1) for line in text.splitlines() if line.split(":")[0].isidentifier()
    )
    for group in ("model", "prompt", "dataset", "stage", "score", "experiment", "hparams_search"):
        assert group in groups, group
    assert "patch_center" in groups["prompt"] and "tiny_llava" in groups["model"]
    assert "progressive" in groups["stage"]
    examples = [line for line in text.splitlines() if line.strip().startswith("python train.py")]
    assert len(examples) >= 3 and any(" -m " in line for line in examples)
    assert "IQA_DEBUG=1" in text
