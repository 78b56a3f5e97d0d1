"""Perception-then-inference (arXiv 2512.09555) in its paper's setting: experiment=briqa_spaq and
briqa_koniq on mPLUG-Owl2-7B, with protocol=briqa_spaq / briqa_koniq for the test sets, and its
per-token attention map of the quality token (analysis=attention)."""

import csv
import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from iqa_lightning.analysis import attention
from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer
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


def test_the_per_token_map_is_the_readout_per_prompt_token_averaged_over_images(tmp_path):
    backbone = build_tiny_llava(num_layers=2)
    score = WordScore(["excellent", "good", "fair", "poor", "bad"], [1, 0.75, 0.5, 0.25, 0],
                      question="How would you rate the quality of this image?",
                      answer_prefix="The quality of the image is")  # fmt: skip
    scorer = LMMWordScorer(backbone, NoPrompt(), score)
    side = backbone.image_size
    pixels = torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    out = attention.compute(scorer, pixels, {})
    ids = scorer.input_ids[0]
    weights = backbone.last_token_attention(pixels, scorer.input_ids.expand(3, -1))
    mean = weights.double().mean(2).mean(0)  # [B, S]
    for row, entries in enumerate(out["tokens"]):
        # every position's weight lands in exactly one entry: the entries sum to 1
        assert sum(w for _, _, w in entries) == pytest.approx(1.0, abs=1e-6)
        part, token, image = entries[0]
        assert (part, token) == ("image", "<image>")
        assert image == pytest.approx(float(out["mass"][row, :, 0].mean()), abs=1e-9)
        assert len(entries) == 1 + int((ids != backbone.image_token_id).sum())
    # the last prompt token is the answer position's own: its weight is the diagonal entry
    last = backbone.tokenizer.convert_ids_to_tokens(int(ids[-1]))
    assert out["tokens"][0][-1][:2] == ("other", last)
    assert out["tokens"][0][-1][2] == pytest.approx(float(mean[0, -1]), abs=1e-9)

    result = attention.summarise([{**out, "image_id": ["a", "b", "c"]}], scorer, {"top_tokens": 4})
    table = result.token_table()
    image_row = next(r for r in table if r["token"] == "<image>")
    expected = sum(entries[0][2] for entries in out["tokens"]) / 3
    assert image_row["mean_weight"] == pytest.approx(expected) and image_row["images"] == 3
    assert [r["mean_weight"] for r in table] == sorted((r["mean_weight"] for r in table),
                                                       reverse=True)  # fmt: skip
    files = attention.write(result, tmp_path)
    assert [f.name for f in files] == list(attention.FILES)
    summary = json.loads((tmp_path / "attention.json").read_text())
    assert summary["top_tokens"] == table[:4]
    with open(tmp_path / "attention_tokens.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["token"] for r in rows] == [r["token"] for r in table]
    with pytest.raises(Exception, match="analysis.top_tokens=0"):
        attention.summarise([{**out, "image_id": ["a", "b", "c"]}], scorer, {"top_tokens": 0})
