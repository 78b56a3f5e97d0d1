"""Every option of every config group, and every experiment, composes and resolves (and no model
preset runs remote code or checkpoints gradients by default)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from iqa_lightning.train import CONFIG_DIR, quote_numeric_choices

GROUPS = [
    "model", "prompt", "dataset", "stage", "score", "trainer", "logger", "callbacks",
    "experiment", "hparams_search", "debug", "prompt_optimizer", "vp_recipe", "vp_prompt",
]  # fmt: skip


def options(group):
    # Names starting with "_" are shared pieces included by the options, not options.
    files = (Path(CONFIG_DIR) / group).glob("*.yaml")
    return sorted(p.stem for p in files if not p.stem.startswith("_"))


def compose_train(overrides, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=quote_numeric_choices([*overrides, f"paths.output_dir={tmp_path}"]),
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resolved = OmegaConf.to_container(job, resolve=True)
    return cfg, resolved


CASES = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(group, option, tmp_path):
    cfg, resolved = compose_train([f"{group}={option}"], tmp_path)
    from hydra.utils import get_class

    from iqa_lightning.module import IQAModule

    assert issubclass(get_class(resolved["module"]["_target_"]), IQAModule)
    assert resolved["dataset"]["image_size"] == resolved["model"]["image_size"]
    if not resolved["prompt"].get("_partial_"):
        assert resolved["prompt"]["image_size"] == resolved["model"]["image_size"]
    if group == "model":
        # composed, so a preset that extends another (one_align: mplug_owl2_7b) counts
        assert resolved["model"].get("trust_remote_code", False) is False
        assert resolved["model"]["gradient_checkpointing"] is False


@pytest.mark.parametrize("option", options("prompt"))
def test_prompt_options_instantiate_on_the_tiny_backbone(option, tmp_path):
    from iqa_lightning.models.backbones import build_tiny_llava

    backbone = build_tiny_llava()
    cfg, _ = compose_train(["model=tiny_llava", f"prompt={option}"], tmp_path)
    prompt = instantiate(cfg.prompt)
    if cfg.prompt.get("_partial_"):  # feature prompters are built on the backbone
        prompt = prompt(backbone=backbone)
        assert hasattr(prompt, "adapt")
    else:
        assert prompt.image_size == backbone.image_size


def test_score_options_bind_to_the_tiny_backbone(tmp_path):
    from iqa_lightning.models.backbones import build_tiny_llava

    backbone = build_tiny_llava()
    for score in options("score"):
        cfg, _ = compose_train(["model=tiny_llava", f"score={score}"], tmp_path)
        instantiate(cfg.score).bind(backbone)  # every word is one token of the tokenizer


def test_prompt_grid_sweeps_every_prompt_type(tmp_path):
    cfg, _ = compose_train(["hparams_search=prompt_grid"], tmp_path)
    grids = cfg.hydra.sweeper.grids
    prompts = {p for grid in grids for p in grid["prompt"].split(",")}
    assert prompts == {"padding", "patch_center", "patch_topleft", "overlay"}
    assert cfg.hydra.mode.name == "MULTIRUN"


def test_reference_recipes(tmp_path):
    expected = {"kadid": (32, 25), "koniq": (4, 25), "agiqa": (4, 35)}
    for name, (batch, epochs) in expected.items():
        cfg, _ = compose_train([f"experiment=vp_{name}_padding30"], tmp_path)
        assert cfg.dataset.name.startswith(name)
        assert (cfg.dataset.batch_size, cfg.trainer.max_epochs) == (batch, epochs)
        assert (cfg.prompt.size, cfg.prompt.mode) == (30, "add")
        optimizer = cfg.stage.phases.stage2.optimizer
        assert optimizer.lr == 60.0 and "SGD" in optimizer._target_
        assert cfg.callbacks.early_stopping.patience == 6
        assert cfg.callbacks.early_stopping.monitor == "val/srcc_plcc"


def test_logger_offline_switch(tmp_path):
    cfg, resolved = compose_train(["logger.offline=false"], tmp_path)
    assert resolved["logger"]["loggers"]["wandb"]["offline"] is False
    _, resolved = compose_train([], tmp_path)
    assert resolved["logger"]["loggers"]["wandb"]["offline"] is True


def test_numeric_stage_choice_is_quoted_for_hydra():
    assert quote_numeric_choices(["stage=2", "prompt.size=10,30", "stage=1,2"]) == [
        "stage='2'",
        "prompt.size=10,30",
        "stage='1','2'",
    ]
    assert quote_numeric_choices(["stage=progressive"]) == ["stage=progressive"]
