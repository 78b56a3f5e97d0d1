"""Checkpoint presets bring their authors' score head, template and pre-processing: the composed
config of every family is the authors' scorer, an explicit score= still wins, and the golden
mPLUG-Owl2 fixture (recorded from Q-Align's own code) scored with ``model=one_align`` and no
``score=`` gives Q-Align's numbers."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from iqa_lightning.build import CONFIG_DIR
from iqa_lightning.score import build_scorer
from iqa_lightning.scorer import compose_scoring

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mplug_owl2_tiny"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text())
LEVELS = ["excellent", "good", "fair", "poor", "bad"]
# The authors' scorers: q_align/evaluate/scorer.py (QAlignScorer, QAlignAestheticScorer,
# QAlignVideoScorer: weights 1 .. 0) and DeQA-Score's src/evaluate/scorer.py (weights 5 .. 1).
QUALITY = ("How would you rate the quality of this image?", "The quality of the image is")
AESTHETICS = ("How would you rate the aesthetics of this image?", "The aesthetics of the image is")
VIDEO = ("How would you rate the quality of this video?", "The quality of the video is")
UNIT, ONE_TO_FIVE = [1.0, 0.75, 0.5, 0.25, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]
AUTHORS = {
    "one_align": (QUALITY, UNIT),
    "q_align_koniq": (QUALITY, UNIT),
    "q_align_iqa": (QUALITY, UNIT),
    "q_align_quality": (QUALITY, UNIT),
    "q_align_image": (QUALITY, UNIT),
    "q_align_aesthetic": (AESTHETICS, UNIT),
    "q_align_iaa_vqa": (AESTHETICS, UNIT),
    "q_align_vqa": (VIDEO, UNIT),
    "deqa_score": (QUALITY, ONE_TO_FIVE),
}
# Base models whose authors publish no quality scorer: the global default head.
BASES = ("llava_1_5_7b", "mplug_owl2_7b", "qwen2_5_vl_7b", "tiny_llava")


HEADS = {  # the option of conf/score/ each checkpoint preset names
    **dict.fromkeys(
        ("one_align", "q_align_koniq", "q_align_iqa", "q_align_quality", "q_align_image"), "qalign"
    ),  # fmt: skip
    "q_align_aesthetic": "qalign_aesthetic",
    "q_align_iaa_vqa": "qalign_aesthetic",
    "q_align_vqa": "qalign_video",
    "deqa_score": "qalign_1_5",
}


def _compose(root, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(root, overrides=list(overrides))


def _yaml(group, option):
    return yaml.safe_load(Path(CONFIG_DIR, group, f"{option}.yaml").read_text())


def test_every_published_iqa_checkpoint_preset_names_the_authors_head():
    """Read from the files (no composition): a preset loading a checkpoint tuned for quality
    (q-future/*, DeQA-Score) sets the score group to a head that is its authors' scorer, and
    declares their template and pre-processing (its own or mplug_owl2_7b's)."""
    checkpoints = set()
    for path in Path(CONFIG_DIR, "model").glob("*.yaml"):
        preset = yaml.safe_load(path.read_text())
        if not str(preset.get("pretrained", "")).startswith(("q-future/", "zhiyuanyou/")):
            continue
        checkpoints.add(path.stem)
        head = [d["override /score@_global_.score"] for d in preset["defaults"]
                if isinstance(d, dict) and "override /score@_global_.score" in d]  # fmt: skip
        assert head == [HEADS[path.stem]], path
        (question, prefix), weights = AUTHORS[path.stem]
        score = _yaml("score", head[0])
        assert (score["question"], score["answer_prefix"]) == (question, prefix), path
        assert score["words"] == LEVELS and score["weights"] == weights, path
        assert preset["template"] == "qalign" and "mplug_owl2_7b" in preset["defaults"]
    base = _yaml("model", "mplug_owl2_7b")
    assert base["resize"] == "pad_square" and base["normalization"] == "backbone"
    assert checkpoints == set(AUTHORS)


def test_the_preset_head_wins_over_the_default_and_loses_to_score():
    cfg = _compose("scoring", "model=one_align")
    assert cfg.score.name == "qalign" and cfg.score.question == QUALITY[0]
    # "USER: {question}\n<|image|>\nASSISTANT: {prefix}", expand2square then resize
    assert cfg.model.template == "qalign" and cfg.model.resize == "pad_square"
    assert _compose("scoring", "model=one_align", "score=good_vs_bad").score.name == "good_vs_bad"


@pytest.mark.slow  # the fast equivalents: the two tests above
def test_every_preset_composes_to_its_head_in_every_root():
    for root in ("scoring", "train"):
        heads = {p: _compose(root, f"model={p}").score.name for p in (*AUTHORS, *BASES)}
        assert heads == {**HEADS, **dict.fromkeys(BASES, "good_fine_vs_poor_bad")}, root
        cfg = _compose(root, "model=deqa_score")
        assert list(cfg.score.weights) == ONE_TO_FIVE and cfg.model.resize == "pad_square"
    assert _compose("train", "score=high_vs_low", "model=deqa_score").score.name == "high_vs_low"
    # An experiment that names its head keeps it (experiment=smoke: good_fine_vs_poor_bad).
    smoke = _compose("train", "experiment=smoke", "model=one_align")
    assert smoke.score.name == "good_fine_vs_poor_bad"
    assert _compose("teach", "model=one_align").model.pretrained == "q-future/one-align"


def _fixture_overrides(preset):
    return [f"model={preset}", f"model.pretrained={FIXTURE}", "model.dtype=float32",
            "model.image_size=64", "images=x", "trainer=cpu"]  # fmt: skip


def test_golden_fixture_scored_with_one_align_and_no_score_is_q_aligns(tmp_path):
    """Q-Align's scorer on the tiny checkpoint (golden.json: weights 5 .. 1, so Q-Align's
    QAlignScorer gives (s - 1) / 4 and DeQA-Score's scorer s itself)."""
    images = [str(FIXTURE / "images" / f"{name}.png") for name in GOLDEN["images"]]
    recorded = torch.tensor(GOLDEN["prompts"]["q_align"]["scores"])
    overrides = [*_fixture_overrides("one_align"), f"paths.output_dir={tmp_path}"]
    cli = build_scorer(compose_scoring(overrides))  # the score CLI's path
    assert cli.resize == "pad_square"
    torch.testing.assert_close(cli(images), (recorded - 1) / 4, atol=2e-6, rtol=0)
    # DeQA-Score's scorer: the same prompt and words, weights 5 .. 1 (golden.json's own).
    assert GOLDEN["level_weights"] == ONE_TO_FIVE and HEADS["deqa_score"] == "qalign_1_5"
