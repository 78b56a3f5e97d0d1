"""Resume from the run folder alone (``python train.py resume=<run>``), and how a failed or
interrupted run ends (:mod:`iqa_lightning.resume`).

The CLI test trains two epochs, is refused a conflicting override, then resumes to a third:
``.hydra/`` is byte-identical throughout, ``csv/metrics.csv`` holds every epoch once and W&B
keeps one run id. A real Ctrl-C is ``slow``.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from iqa_lightning.cli import ConfigError
from iqa_lightning.loggers import CSVLogger
from iqa_lightning.resume import (
    check_resumed_config,
    discard_stub,
    resume_args,
    resumed_run,
    trim_metrics,
)
from tests.conftest import REPO, run_main

SHORT = ["experiment=smoke", "dataset.n_refs=4", "dataset.generated_size=96",
         "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]  # fmt: skip


def fake_run(folder: Path, overrides=("experiment=smoke", "prompt.size=30"), ckpt=True) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"prompt": {"size": 30}, "trainer": {"max_epochs": 2}, "seed": 42}),
        folder / ".hydra" / "config.yaml",
    )
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    OmegaConf.save(
        OmegaConf.create({"hydra": {"runtime": {"choices": {"prompt": "padding"}}}}),
        folder / ".hydra" / "hydra.yaml",
    )
    if ckpt:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return folder


def test_resume_composes_the_runs_own_overrides(tmp_path):
    run = fake_run(tmp_path / "run")
    args = resume_args(
        [f"resume={run}", "trainer.max_epochs=5", "prompt.size=30", "prompt=padding"]
    )
    assert args[:2] == ["experiment=smoke", "prompt.size=30"]
    assert "trainer.max_epochs=5" in args and "hydra.output_subdir=null" in args
    assert f"ckpt_path={(run / 'checkpoints' / 'last.ckpt').resolve()}" in args
    assert resume_args(["experiment=smoke"]) == ["experiment=smoke"]  # a new run


def test_resume_refuses_overrides_that_change_the_training(tmp_path):
    run = fake_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"prompt.size=10 \(the run has prompt.size=30\)") as err:
        resume_args([f"resume={run}", "prompt.size=10", "seed=1", "trainer.max_epochs=9"])
    assert "seed=1 (the run has seed=42)" in str(err.value)
    assert "trainer.max_epochs=9" not in str(err.value)
    with pytest.raises(ConfigError, match=r"prompt=overlay \(the run has prompt=padding\)"):
        resume_args([f"resume={run}", "prompt=overlay"])


def test_resume_without_a_checkpoint_is_named(tmp_path):
    run = fake_run(tmp_path / "run", ckpt=False)
    with pytest.raises(ConfigError, match="nothing to resume, no checkpoints/last.ckpt"):
        resume_args([f"resume={run}"])
    # ckpt_path=last with hydra.run.dir and no checkpoint yet: a requeued job starts afresh.
    args = [f"hydra.run.dir={run}", "ckpt_path=last", "experiment=smoke"]
    assert resumed_run(args) == run and resume_args(args) == args
    with pytest.raises(ConfigError, match="no .hydra/config.yaml"):
        resume_args([f"resume={tmp_path}"])


def test_a_config_that_changed_since_the_run_is_named(tmp_path):
    run = fake_run(tmp_path / "run")
    same = OmegaConf.create({"prompt": {"size": 30}, "trainer": {"max_epochs": 7}, "seed": 42,
                             "ckpt_path": "x"})  # fmt: skip
    check_resumed_config(same, run)
    changed = OmegaConf.create({"prompt": {"size": 31}, "trainer": {}, "seed": 1})
    with pytest.raises(ConfigError, match=r"differs .* in prompt.size, seed \("):
        check_resumed_config(changed, run)


def test_keys_added_to_conf_since_the_run_are_logged_not_refused(tmp_path, caplog):
    """A run written before a config node existed (``method``) resumes as it was trained."""
    run = fake_run(tmp_path / "run")
    grown = OmegaConf.create({"prompt": {"size": 30}, "trainer": {}, "seed": 42,
                              "method": {"name": "word_score"}})  # fmt: skip
    with caplog.at_level("WARNING", logger="iqa_lightning"):
        check_resumed_config(grown, run)
    assert "keys added to or dropped from conf/ since the run: method (" in caplog.text


def test_metrics_after_the_checkpoint_are_dropped_and_the_logger_appends(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    rows = [{"epoch": e, "step": 10 * e, "val/srcc": e / 10} for e in range(4)]
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "step", "val/srcc"])
        writer.writeheader()
        writer.writerows(rows)
    assert trim_metrics(folder / "metrics.csv", last_epoch=1) == 2
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"epoch": 2, "val/srcc": 0.2, "train/loss": 1.0}, step=20)
    logger.save()
    with open(folder / "metrics.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in got] == [0, 1, 2]
    assert got[-1]["train/loss"] == "1.0" and got[0]["val/srcc"] == "0.0"


def test_a_failed_runs_stub_folder_is_removed_and_its_log_kept(tmp_path):
    stub = tmp_path / "runs" / "stub"
    (stub / ".hydra").mkdir(parents=True)
    (stub / "train.log").write_text("Traceback ...\n")
    moved = discard_stub(stub, tmp_path / "failed")
    assert not stub.exists() and moved.read_text() == "Traceback ...\n"
    kept = fake_run(tmp_path / "runs" / "kept")  # a checkpoint: resumable
    assert discard_stub(kept, tmp_path / "failed") is None and kept.exists()
    foreign = tmp_path / "mine"  # hydra.run.dir= a folder holding the user's own files
    (foreign / ".hydra").mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep me")
    assert discard_stub(foreign, tmp_path / "failed") is None and foreign.exists()


def _cli(args, env, timeout=300):
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, env=env, text=True, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc.returncode, proc.stdout


def _epochs(run: Path) -> list[int]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return [int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/srcc")]


def _hydra_bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / ".hydra").iterdir())}


def _wandb_ids(run: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("*run-*")}


def test_resume_cli_keeps_config_history_and_wandb_run(run_env, tmp_path, capsys):
    # In-process (run_main: as ``python train.py ...``, without the imports of a fresh process);
    # the slow Ctrl-C test below resumes through real subprocesses.
    run = tmp_path / "run"
    ended = run_main("iqa_lightning.train", [*SHORT, "trainer.max_epochs=1", f"hydra.run.dir={run}"],
                     capsys, env=run_env)  # fmt: skip
    assert ended.code == 0, ended.text[-3000:]
    before = _hydra_bytes(run)
    assert _epochs(run) == [0] and len(_wandb_ids(run)) == 1

    # A conflicting override is refused before Hydra starts (resume_args: the unit tests above).
    with pytest.raises(ConfigError, match=r"prompt.size=10 \(the run has prompt.size=30\)"):
        resume_args([f"resume={run}", "prompt.size=10"])
    assert _hydra_bytes(run) == before

    ended = run_main("iqa_lightning.train", [f"resume={run}", "trainer.max_epochs=2"], capsys,
                     env=run_env)  # fmt: skip
    assert ended.code == 0, ended.text[-3000:]
    assert _hydra_bytes(run) == before
    assert _epochs(run) == [0, 1]
    assert len(_wandb_ids(run)) == 1, sorted((run / "wandb").iterdir())


@pytest.mark.slow  # a real Ctrl-C; the default test above resumes a run that ended
def test_ctrl_c_keeps_the_run_and_prints_the_resume_command(run_env, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "train.py", *SHORT, "trainer.max_epochs=6", f"hydra.run.dir={run}"],
        cwd=REPO, env=run_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"resume with: python train.py resume={run}" in text, text[-3000:]
    before = _hydra_bytes(run)
    code, text = _cli([f"resume={run}"], run_env)
    assert code == 0, text[-3000:]
    assert _hydra_bytes(run) == before
    epochs = _epochs(run)
    assert epochs == sorted(set(epochs)) and epochs[0] == 0, epochs
    assert (run / "metrics.json").is_file() and len(_wandb_ids(run)) == 1
