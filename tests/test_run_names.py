"""Run folders and W&B runs are named from the composed choices (iqa_lightning/run_names.py)."""

import re

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from iqa_lightning.run_names import current_label, run_label
from iqa_lightning.train import CONFIG_DIR, quote_numeric_choices


def compose_run(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=quote_numeric_choices(list(overrides)), return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_the_label_names_task_stage_model_prompt_and_dataset():
    choices = {"stage": "2", "model": "llava_1_5_7b", "prompt": "padding", "dataset": "koniq"}
    assert run_label("train", choices) == "stage2_llava_1_5_7b_padding_koniq"
    assert run_label("demo", {**choices, "stage": "1", "prompt": "none"}) == (
        "demo_stage1_llava_1_5_7b_koniq"
    )
    assert run_label("train", {**choices, "stage": "progressive", "prompt": None}) == (
        "progressive_llava_1_5_7b_koniq"
    )
    assert run_label("train", {}) == "train"


def test_run_folder_and_wandb_name_follow_the_choices():
    cfg = compose_run("prompt=padding", "dataset=koniq", "stage=2")
    folder = cfg.hydra.run.dir.rsplit("/", 1)[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_stage2_llava_1_5_7b_padding_koniq", folder)
    assert cfg.logger.loggers.wandb.name == "stage2_llava_1_5_7b_padding_koniq"
    demo = compose_run("experiment=demo")
    assert demo.hydra.run.dir.endswith("_demo_stage1_tiny_llava_trained_learning")
    assert demo.logger.loggers.wandb.name == "demo_stage1_tiny_llava_trained_learning"
    # a multirun's jobs: folders named by job number, W&B runs by their own choices
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"
    assert "multiruns/" in cfg.hydra.sweep.dir


def test_outside_a_hydra_run_the_label_is_the_task_name(monkeypatch):
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    assert current_label("smoke") == "smoke"


def test_the_demo_runs_wandb_run_carries_the_label(demo_run):
    from tests.test_cli import wandb_records

    out, _ = demo_run
    # the first: eval and analyze add later runs of the same W&B run (resumed by id)
    run_file = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))[0]
    names = {
        r.run.display_name for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run"
    }
    assert names == {"smoke_stage2_tiny_llava_padding_synthetic"}
