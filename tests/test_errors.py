"""How ``python train.py`` ends on a user error: one ``error:`` line, last, exit code 1.

Subprocess runs stop before training where they can (config and data checks come first), so
most of these cost a second or a few, not a training run.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from iqa_lightning.cli import ConfigError, error_line, user_error
from tests.conftest import FAST, REPO, run_main


def run_cli(args, env, timeout=300):
    """``python train.py ARGS`` with stdout and stderr apart and together (in print order)."""
    proc = subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.fixture
def loud_env(run_env):
    """W&B allowed to print its closing lines, as a user sees them."""
    env = dict(run_env)
    env.pop("WANDB_SILENT", None)
    env.pop("IQA_DEBUG", None)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


# slow: the one-line error path runs by default in the other subprocess tests of this file
@pytest.mark.slow
def test_corrupt_image_met_in_training_is_the_last_line(loud_env, tmp_path):
    from tests.data.fixtures import write_kadid

    root = write_kadid(tmp_path / "kadid", n_refs=5)
    bad = root / "images" / "I02_01_02.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a truncated download
    out = tmp_path / "run"
    code, text = run_cli(
        [
            "experiment=smoke",  # logs to W&B (offline) and CSV
            "dataset=kadid",
            f"dataset.root={root}",  # dataset.num_workers=2: the error comes from a worker
            "trainer.max_epochs=1",
            f"hydra.run.dir={out}",
        ],
        loud_env,
    )
    assert code == 1, text[-3000:]
    line = last_line(text)
    assert line.startswith("error: cannot load image") and str(bad) in line, text[-3000:]
    assert "Traceback" not in text
    # The W&B run (started: data is read in training) is closed before the error line; its
    # offline folder went with the run folder, which held nothing worth keeping.
    wandb_lines = [i for i, t in enumerate(text.splitlines()) if t.startswith("wandb:")]
    error_at = text.splitlines().index(line)
    assert all(i < error_at for i in wandb_lines)
    # The run wrote nothing worth keeping: its folder is gone, its log (with the traceback)
    # kept under outputs/failed/, named on the line above the error.
    assert not out.exists()
    log_file = Path(re.search(r"traceback in (\S+);", text).group(1))
    assert log_file.parent.name == "failed" and "Traceback" in log_file.read_text()


def test_wrong_root_is_reported_before_the_model_is_built(loud_env, tmp_path, capsys):
    """A 7B preset whose weights are not there and a wrong dataset.root: the data error
    (``python train.py ...`` run in this process: what it prints and its exit code)."""
    out = tmp_path / "run"
    missing_root = tmp_path / "no such kadid"
    ended = run_main(
        "iqa_lightning.train",
        [
            "experiment=smoke",
            "model=llava_1_5_7b",
            f"model.pretrained={tmp_path / 'no-such-model'}",
            "dataset=kadid",
            f"dataset.root={missing_root}",
            f"hydra.run.dir={out}",
        ],
        capsys,
        env=loud_env,
    )
    assert ended.code == 1, ended.text[-3000:]
    line = ended.last_line()
    assert line.startswith("error: kadid: dataset root") and str(missing_root) in line, ended.text
    assert "no-such-model" not in ended.text and "building model" not in ended.text
    assert "Traceback" not in ended.text
    assert not (out / "wandb").exists(), "a W&B run was started for a run that never began"


@pytest.mark.parametrize("epochs", [0, -3])
def test_max_epochs_below_one_is_refused(epochs):
    """Before anything is built (the CLI path of such a ConfigError: test_safe_runs.py's
    subprocess runs and test_full_traceback_on_request)."""
    from iqa_lightning.train import check_config

    cfg = OmegaConf.create({"trainer": {"max_epochs": epochs}})
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert error_line(err.value).startswith(f"error: trainer.max_epochs={epochs}:")


@pytest.mark.slow  # a subprocess; the in-process equivalent is the test below
def test_full_traceback_on_request(loud_env, tmp_path):
    env = dict(loud_env, IQA_DEBUG="1")
    code, text = run_cli([*FAST, "trainer.max_epochs=0", f"hydra.run.dir={tmp_path}"], env)
    assert code == 1
    assert "Traceback" in text and "ConfigError" in text


def test_debug_re_raises_the_user_error_with_its_traceback(monkeypatch):
    from iqa_lightning.cli import report_user_errors

    def task():
        raise ConfigError("trainer.max_epochs=0: the run would test an untrained model")

    monkeypatch.setenv("IQA_DEBUG", "1")
    with pytest.raises(ConfigError, match="trainer.max_epochs=0"):
        report_user_errors(task)()
    monkeypatch.delenv("IQA_DEBUG")
    with pytest.raises(SystemExit):
        report_user_errors(task)()


def test_a_stage_schedule_that_leaves_a_phase_no_epoch_is_refused():
    from iqa_lightning.train import check_config

    stage = {"phases": [{"name": "stage1", "epochs": 2}, {"name": "stage2", "epochs": None}]}
    cfg = OmegaConf.create({"trainer": {"max_epochs": 2}, "stage": stage})
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=2.*stage2 would never train"):
        check_config(cfg)
    cfg.trainer.max_epochs = 3
    check_config(cfg)
    # Lightning's "no epoch limit" stays usable with a step limit.
    check_config(OmegaConf.create({"trainer": {"max_epochs": -1, "max_steps": 100}}))
    with pytest.raises(ConfigError, match="trainer.max_epochs=-1"):
        check_config(OmegaConf.create({"trainer": {"max_epochs": -1}}))


def test_errors_raised_through_instantiate_are_user_errors():
    from hydra.utils import instantiate

    spec = {
        "_target_": "iqa_lightning.models.score.WordScore",
        "words": ["good", "good"],
        "weights": [1, 1, 0, 0],
    }
    with pytest.raises(Exception) as info:
        instantiate(spec)
    assert type(info.value).__name__ == "InstantiationException"
    cause = user_error(info.value)
    assert isinstance(cause, ValueError)
    assert error_line(cause).startswith("error: score.words=")
    assert "'good' appears more than once" in error_line(cause)


def test_bugs_are_not_user_errors():
    import torch

    with pytest.raises(RuntimeError) as info:
        torch.zeros(2).view(3)
    assert user_error(info.value) is None
    with pytest.raises(ValueError) as info:
        int("not a number")  # a ValueError from outside the package's own checks
    assert user_error(info.value) is None


def test_a_multi_line_message_becomes_one_line():
    message = (
        "kadid: 2 of 9 image file(s) listed in the annotations are missing:\n"
        "  /data/a.png\n  /data/b.png\nRestore them, or set dataset.on_bad_image=skip"
    )
    assert error_line(FileNotFoundError(message)) == (
        "error: kadid: 2 of 9 image file(s) listed in the annotations are missing: "
        "/data/a.png, /data/b.png; Restore them, or set dataset.on_bad_image=skip"
    )


def test_an_error_from_a_dataloader_worker_keeps_its_own_message():
    """dataset=kadid reads with 2 workers: torch re-raises the error with the worker's traceback
    as its message; the line shows the original message only."""
    from torch._utils import ExceptionWrapper

    from iqa_lightning.data import ImageLoadError

    try:
        raise ImageLoadError.for_path("/data/kadid/images/I01_01_01.png", "truncated file")
    except ImageLoadError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ImageLoadError) as info:
        wrapped.reraise()
    assert "Original Traceback" in str(info.value)
    assert user_error(info.value) is info.value
    assert error_line(info.value) == (
        "error: cannot load image '/data/kadid/images/I01_01_01.png': truncated file"
    )
