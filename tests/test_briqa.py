"""Perception-then-inference (arXiv 2512.09555) in its paper's setting: experiment=briqa_spaq and
briqa_koniq on mPLUG-Owl2-7B, with protocol=briqa_spaq / briqa_koniq for the test sets."""

import pytest
from hydra import compose, initialize_config_dir

from iqa_lightning.protocols import check_protocol, protocol_test_sets
from iqa_lightning.train import CONFIG_DIR, quote_numeric_choices


@pytest.fixture(scope="module")
def composed():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return {
            name: compose("train", overrides=quote_numeric_choices(overrides))
            for name, overrides in {
                "spaq": ["experiment=briqa_spaq"],
                "koniq": ["experiment=briqa_koniq"],
                "baseline": ["experiment=briqa_spaq", "stage=one_stage"],
            }.items()
        }


@pytest.mark.parametrize("dataset", ["spaq", "koniq"])
def test_briqa_presets_train_on_their_set_with_mplug_owl2(composed, dataset):
    cfg = composed[dataset]
    assert cfg.model.pretrained == "MAGAer13/mplug-owl2-llama2-7b"
    assert cfg.dataset.name == dataset and cfg.stage.name == "perception_inference"
    assert list(cfg.stage.phases) == ["perception", "inference"]
    assert cfg.perception.descriptions.kind == "qinstruct"
    assert cfg.perception.descriptions.json_path.endswith("q-instruct/cleaned_labels.json")
    assert cfg.prompt._target_.endswith("NoPrompt") and cfg.trainer.accelerator == "gpu"


@pytest.mark.parametrize("dataset", ["spaq", "koniq"])
def test_briqa_protocols_name_the_seed_test_sets(dataset):
    from omegaconf import OmegaConf

    spec = check_protocol(OmegaConf.load(f"{CONFIG_DIR}/protocol/briqa_{dataset}.yaml"))
    assert spec["train"] == [dataset]
    assert list(protocol_test_sets(spec)) == ["live", "csiq", "spaq", "koniq"]
    assert spec["not_found"]  # nothing published is guessed


def test_the_one_stage_baseline_keeps_the_data_and_backbone(composed):
    cfg = composed["baseline"]
    assert cfg.stage.name == "one_stage" and cfg.dataset.name == "spaq"
    assert cfg.model.pretrained == "MAGAer13/mplug-owl2-llama2-7b"
