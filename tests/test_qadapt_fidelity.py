"""Q-Adapt against yeppp27/Q-Adapt at 424a7c6: the presets' data files, clipping and precision,
and the prompter conditioned on every human turn of a conversation (docs/reproduction.md)."""

from functools import partial

import pytest
import torch
from hydra import compose, initialize_config_dir

from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import QAdaptPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer
from iqa_lightning.train import CONFIG_DIR, quote_numeric_choices

QADAPT = partial(QAdaptPrompt, num_queries=4, hidden_size=32, num_layers=1, num_heads=4,
                 encoder_width=32, gate_hidden=64)  # fmt: skip
TURNS = [("How is the clarity of this image?", "Blurry."), ("Is there noise?", "Some, yes.")]


def compose_train(overrides):
    return compose("train", overrides=quote_numeric_choices(overrides))


def test_presets_carry_the_references_data_clipping_and_precision():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        check_presets()


def check_presets():
    stage1 = compose_train(["experiment=qadapt_stage1"])
    # finetune_single_stage1.sh:15 trains on pathway_all.json; :21 bf16.
    assert stage1.instruct.qinstruct_json.endswith("q-instruct/pathway_all.json")
    assert stage1.trainer.precision == "bf16-mixed"
    # zero2.json sets no gradient_clipping: DeepSpeed does not clip, and HF leaves it to it.
    assert stage1.trainer.gradient_clip_val is None

    stage2 = compose_train(["experiment=qadapt_stage2"])
    assert stage2.instruct.qinstruct_json.endswith("q-instruct/q-instruct.json")  # stage2.sh:16
    assert stage2.trainer.precision == "16-mixed"  # stage2.sh:22-23: --bf16 False --fp16 True
    assert stage2.model.dtype == "float32"  # fp32 weights under fp16 autocast (master copies)
    assert stage2.trainer.gradient_clip_val is None
    assert stage2.prompt.condition_on == "all_human_turns"

    progressive = compose_train(["experiment=qadapt_progressive"])
    assert progressive.trainer.gradient_clip_val is None
    assert progressive.prompt.condition_on == "all_human_turns"
    # The knob composes both ways.
    first = compose_train(["experiment=qadapt_stage2", "prompt.condition_on=first_human_turn"])
    assert first.prompt.condition_on == "first_human_turn"


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    backbone = build_tiny_llava()
    score = WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0])
    return LMMWordScorer(backbone, QADAPT(backbone=backbone), score).eval()


def test_the_instruct_loss_conditions_on_every_human_turn(scorer, monkeypatch):
    prompter = scorer.prompter
    read = []
    texts = prompter.instruction_texts
    monkeypatch.setattr(prompter, "instruction_texts", lambda i: read.append(i) or texts(i))
    side = scorer.backbone.image_size
    pixels = torch.rand(2, 3, side, side)
    with torch.no_grad():
        scorer.instruct_loss(pixels, [TURNS, TURNS[1:]])
    assert read == [[[q for q, _ in TURNS], [TURNS[1][0]]]]
    flat, owner = texts(read[0])
    assert flat == [TURNS[0][0], TURNS[1][0], TURNS[1][0]] and owner == [0, 0, 1]

    prompter.condition_on = "first_human_turn"
    try:
        assert texts(read[0]) == ([TURNS[0][0], TURNS[1][0]], [0, 1])
    finally:
        prompter.condition_on = "all_human_turns"


def test_each_turn_is_its_own_pass_and_the_prompts_are_averaged(scorer):
    prompter = scorer.prompter
    features = torch.randn(2, 16, scorer.backbone.vision_feature_dim)

    def adapt(instructions):
        with torch.no_grad(), prompter.conditioned(instructions):
            return prompter.adapt(features)

    q1, q2, q3 = TURNS[0][0], TURNS[1][0], "Rate the quality."
    both = adapt([[q1, q2], [q3]])
    one, two = adapt([q1, q3]), adapt([q2, q3])
    # x + s * mean(p1, p2) = mean(x + s * p1, x + s * p2); the second image has one turn.
    torch.testing.assert_close(both[0], (one[0] + two[0]) / 2)
    torch.testing.assert_close(both[1], one[1])
    assert not torch.allclose(both[0], one[0])  # the second turn changes the features

    prompter.condition_on = "first_human_turn"
    try:
        torch.testing.assert_close(adapt([[q1, q2], [q3]]), one)
    finally:
        prompter.condition_on = "all_human_turns"


def test_bad_condition_and_empty_turns_are_refused():
    backbone = build_tiny_llava()
    with pytest.raises(ValueError, match="prompt.condition_on='every'"):
        QADAPT(backbone=backbone, condition_on="every")
    prompter = QADAPT(backbone=backbone)
    with pytest.raises(ValueError, match="image 1 of the batch has no instruction"):
        prompter.instruction_texts([["q"], []])
