"""Every failure on one ``error:`` line, found before anything heavy is built: Hydra's own
errors with a hint that works, numeric config values, Trainer keys, a model that is not in the
local cache while offline, a damaged tuned-tensor file, an unsafe checkpoint, a read-only place.
"""

import errno
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from iqa_lightning.checkpoints import UnsafeCheckpointError, load_checkpoint
from iqa_lightning.cli import TASK_MARK, ConfigError, error_line, user_error
from iqa_lightning.hub import check_model_available
from iqa_lightning.hydra_entry import error_message
from iqa_lightning.train import CONFIG_DIR, check_config, quote_numeric_choices
from tests.conftest import REPO, run_main


def compose_train(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=quote_numeric_choices(list(overrides)))


def composition_error(*overrides) -> BaseException:
    with pytest.raises(Exception) as info:
        compose_train(*overrides)
    return info.value


def test_an_unknown_option_names_the_closest_one():
    line = error_message(composition_error("prompt=paddng"))
    assert line.startswith("prompt=paddng: no such option in prompt; did you mean prompt=padding?")
    assert "patch_center" in line and "\n" not in line


def test_a_misspelt_key_gets_the_right_hint_not_a_plus():
    line = error_message(composition_error("trainer.max_epoch=1"))
    assert line == "trainer.max_epoch: no such key; did you mean trainer.max_epochs?"


def test_the_plus_form_is_refused_before_the_trainer_is_built():
    cfg = compose_train("experiment=smoke", "+trainer.max_epoch=1")
    with pytest.raises(
        ConfigError, match=r"trainer.max_epoch is not an argument .*trainer.max_epochs\?"
    ):
        check_config(cfg)


def test_an_unwritable_output_folder_is_one_line():
    err = PermissionError(errno.EACCES, "Permission denied", "/data/runs/x")
    assert error_message(err).startswith("cannot make or write /data/runs/x: permission denied")
    assert user_error(err) is err  # met while the run writes: the same one line


@pytest.mark.parametrize(
    "override,message",
    [
        ("prompt.size=-3", "prompt.size=-3 must be at least 1"),
        ("prompt.size=abc", "prompt.size='abc' must be an integer"),
        ("prompt.size=40", "prompt.size=40: a padding of 40 px on each side leaves no image"),
        ("dataset.batch_size=0", "dataset.batch_size=0 must be at least 1"),
        ("module.task_weights.score=-1", "module.task_weights.score=-1 must be at least 0"),
        ("prompt.delta=0", "prompt.delta=0 must be above 0"),
    ],
)
def test_numeric_values_are_checked_before_the_model(override, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_train("experiment=smoke", override))
    assert str(err.value).startswith(message), str(err.value)


def _fake_cache(root, repo_id):
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / "config.json").write_text("{}")


def test_a_model_missing_from_the_cache_fails_at_once_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"pretrained": "llava-hf/llava-1.5-7b-hf"}
    with pytest.raises(ConfigError) as err:
        check_model_available(cfg, preset="llava_1_5_7b")
    assert str(err.value).startswith("model=llava_1_5_7b: llava-hf/llava-1.5-7b-hf is not in")
    assert str(tmp_path) in str(err.value) and "HF_HUB_OFFLINE=1" in str(err.value)
    _fake_cache(tmp_path, "llava-hf/llava-1.5-7b-hf")
    check_model_available(cfg, preset="llava_1_5_7b")  # in the cache: loads offline
    check_model_available({"pretrained": str(tmp_path)})  # a local folder: not the hub's
    check_model_available({"pretrained": None})  # a tiny model built from a config


def test_an_unreachable_hub_fails_at_once(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ConfigError, match=r"http://127.0.0.1:9 cannot be reached"):
        check_model_available({"pretrained": "Qwen/Qwen2.5-VL-7B-Instruct"}, preset="qwen")


def test_hydras_errors_end_on_one_line_through_its_own_report(monkeypatch, capsys):
    """What ``python train.py prompt=paddng`` prints: Hydra's report is replaced while the
    config is composed (iqa_lightning.hydra_entry.reported), a task's own error is not."""
    import hydra._internal.utils as hydra_utils

    from iqa_lightning import hydra_entry

    monkeypatch.setattr(sys, "argv", ["train.py", "prompt=paddng"])
    failure = composition_error("prompt=paddng")

    def compose():
        raise failure

    with hydra_entry.reported(), pytest.raises(SystemExit) as stop:
        hydra_utils.run_and_report(compose)
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: prompt=paddng: no such option in prompt; did you mean prompt=padding? (options: "
        "none, overlay, padding, patch_center, patch_topleft, qadapt, qadapt_tiny)"
    ]
    assert hydra_utils.run_and_report is not None  # put back after the block
    bug = RuntimeError("a bug in a task")
    setattr(bug, TASK_MARK, True)  # as cli.report_user_errors marks what left the task

    def task():
        raise bug

    with hydra_entry.reported(), pytest.raises(SystemExit):  # Hydra's own report: a traceback
        hydra_utils.run_and_report(task)
    assert "RuntimeError: a bug in a task" in capsys.readouterr().err


def test_plain_train_offline_is_one_line_and_leaves_no_stub(run_env, tmp_path, capsys, monkeypatch):
    """``python train.py`` with nothing cached, run in this process (the hub cache read from an
    empty folder, as HF_HOME would make it)."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    env = {**run_env, "IQA_ROOT": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    ended = run_main("iqa_lightning.train", [], capsys, env=env)
    assert ended.code == 1, ended.text[-3000:]
    last = ended.last_line()
    assert last.startswith("error: model=llava_1_5_7b: llava-hf/llava-1.5-7b-hf is not in"), last
    assert str(tmp_path / "hf" / "hub") in last
    assert not list((tmp_path / "outputs" / "runs").iterdir())  # no stub run folder
    (log_file,) = (tmp_path / "outputs" / "failed").iterdir()
    assert "ConfigError" in log_file.read_text()


def test_an_unsafe_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "callback": ConfigError("pickled object")}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    assert user_error(err.value) is err.value
    line = error_line(err.value)
    assert line.startswith(f"error: checkpoint '{path}' holds a pickled") and "\n" not in line


def test_only_the_sweep_presets_set_the_hydra_mode():
    """The single composition (iqa_lightning.hydra_entry) reads the mode from -m unless a
    MODE_KEYS override is given; no other config group may set hydra.mode."""
    from iqa_lightning.hydra_entry import MODE_KEYS, mode_may_be_set

    conf = REPO / "conf"
    import re

    setters = sorted(
        p.relative_to(conf).parts[0]
        for p in conf.rglob("*.yaml")
        if re.search(r"mode: MULTIRUN|hparams_search: *(?!null)\w", p.read_text())
    )
    assert set(setters) <= set(MODE_KEYS), setters
    assert mode_may_be_set(["hparams_search=methods"]) and not mode_may_be_set(["prompt=padding"])
