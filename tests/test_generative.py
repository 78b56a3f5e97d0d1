"""Generation-based scoring (iqa_lightning/models/generation.py, methods/generative.py): the
authors' answer regexes on known texts, scripted answers through the real batched ``generate``
of the tiny Qwen2.5-VL (scores and failure counts exact), native-resolution patch grids equal to
Qwen2-VL's image processor, and the presets composed with their authors' settings."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from iqa_lightning.errors import ConfigError
from iqa_lightning.models.backbones import build_tiny_qwen2_5_vl
from iqa_lightning.models.generation import (
    AnswerParser,
    GenerativeScorer,
    PromptSpec,
    completion_mask,
    render_prompt,
)
from iqa_lightning.models.native_resolution import NativeResolution, smart_resize

CONF = Path(__file__).resolve().parents[1] / "conf"


def preset(name: str) -> dict:
    """``method.generation`` of a method option, merged over conf/method/generative.yaml."""
    node = OmegaConf.merge(OmegaConf.load(CONF / "method/generative.yaml"),
                           OmegaConf.load(CONF / f"method/{name}.yaml"))  # fmt: skip
    return OmegaConf.to_container(node.method.generation)


def test_the_authors_regexes_read_known_answers():
    q_insight = AnswerParser(**preset("q_insight")["parser"])
    assert q_insight.parse('<think>sharp</think><answer>{"rating": 3.85}</answer>').score == 3.85
    assert (
        q_insight.parse('<answer>{"rating": 2}</answer><answer>{"rating": 4}</answer>').score == 2
    )
    parsed = q_insight.parse("<think>noisy, dark</think> rating 3.1")  # no answer tag
    assert parsed.score is None and parsed.explanation == "noisy, dark"
    assert q_insight.parse('<answer>{"rating": 3.5.1}</answer>').score is None  # float() fails
    assert q_insight.failure_score() == 3.0
    r1 = AnswerParser(**preset("visualquality_r1")["parser"])
    assert r1.parse("<answer>2</answer> then <answer>score 4.25 of 5</answer>").score == 4.25
    assert r1.parse("I would say 3.5 overall").score == 3.5  # no tag: the whole text
    assert r1.parse("<answer>bad</answer>").score is None
    # Its failure rule: random.randint(1, 5) after random.seed(1), as its scripts draw.
    import random

    random.seed(1)
    assert [r1.failure_score() for _ in range(4)] == [random.randint(1, 5) for _ in range(4)]
    with pytest.raises(ConfigError, match="parser.number_pattern"):
        AnswerParser(number_pattern="(")


@pytest.fixture(scope="module")
def qwen():
    return build_tiny_qwen2_5_vl()


def scripted(backbone, answers):
    """The backbone's real ``generate``, forced to write ``answers`` (one per row) then stop."""
    tok = backbone.tokenizer
    ids = [tok(a, add_special_tokens=False).input_ids + [tok.eos_token_id] for a in answers]
    generate, start = backbone.model.generate, {}

    def allowed(row, seen):
        step = seen.shape[0] - start["length"]
        return [ids[row][step]] if step < len(ids[row]) else [tok.pad_token_id]

    def forced(**kwargs):
        start["length"] = kwargs["input_ids"].shape[1]
        start["ids"] = kwargs["input_ids"]
        start["grid"] = kwargs.get("image_grid_thw")
        return generate(prefix_allowed_tokens_fn=allowed, **kwargs)

    backbone.model.generate = forced
    return start


def test_scripted_answers_give_exact_scores_and_failure_counts(qwen):
    texts = ['<answer>{"rating": 3.5}</answer>', "no score here",
             '<think>blur</think><answer>{"rating": 4.25}</answer>', '<answer>{"rating": 2}</answer>',
             "<answer>x</answer>", "<answer>y</answer>"]  # fmt: skip
    settings = preset("q_insight")
    settings["sampling"].update(max_new_tokens=48, num_samples=2)
    authors = render_prompt(qwen, PromptSpec(**settings["prompt"]), "<|image_pad|>")
    # Q-Insight's layout: its system prompt, the question before the image.
    assert authors.startswith("<|im_start|>system\nA conversation between User and Assistant.")
    assert authors.index("The score.") < authors.index("<|vision_start|>")
    settings["prompt"].update(system="Think first.", question="Rate it.")  # short: fast
    scorer = GenerativeScorer(
        qwen, None, settings["prompt"], settings["sampling"], settings["parser"]
    )
    seen = scripted(qwen, texts)
    try:
        out = scorer.score({"pixels": torch.rand(3, 3, qwen.image_size, qwen.image_size)})
    finally:
        del qwen.model.generate
    # Image 0: one of two parsed; image 1: both (mean); image 2: none (a failure, the midpoint).
    assert out.scores.tolist() == [3.5, (4.25 + 2) / 2, 3.0]
    assert out.extras["parse_ok"] == [True, True, False]
    assert out.extras["parsed_samples"] == [1, 2, 0]
    assert out.extras["explanation"] == ["", "blur", ""]
    assert out.extras["text"][1] == f"{texts[2]} ||| {texts[3]}"
    # One prompt per answer, left-padded to one length, in Q-Insight's layout (question first).
    ids = seen["ids"]
    assert ids.shape[0] == 6 and (ids[:, -1] != qwen.tokenizer.pad_token_id).all()
    prompt = qwen.tokenizer.decode(ids[0])
    assert prompt.startswith(
        "<|im_start|>system\nThink first.<|im_end|>\n<|im_start|>user\nRate it."
    )


def test_the_completion_mask_stops_after_the_first_end_token():
    ids = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 2, 0, 0]])
    assert completion_mask(ids, [2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


@pytest.mark.parametrize("size", [(100, 160), (60, 60), (300, 90), (27, 500)])
def test_native_grids_equal_the_qwen2_vl_image_processor(qwen, size):
    from transformers import Qwen2VLImageProcessorPil

    low, high = 3136, 28 * 28 * 40
    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": low, "longest_edge": high},
                                         image_mean=qwen.image_mean.flatten().tolist(),
                                         image_std=qwen.image_std.flatten().tolist())  # fmt: skip
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    reference = processor(images=[image], return_tensors="pt")
    native = NativeResolution(low, high)
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    grids, inputs = native.pixel_inputs(qwen, [pixels], n=2)
    assert torch.equal(inputs["image_grid_thw"], reference["image_grid_thw"].repeat(2, 1))
    assert inputs["pixel_values"].shape == (2 * reference["pixel_values"].shape[0],
                                            reference["pixel_values"].shape[1])  # fmt: skip
    # Where no resize is needed the values are the processor's too.
    h, w = smart_resize(*size, 28, low, high)
    if (h, w) == size:
        torch.testing.assert_close(inputs["pixel_values"][: len(reference["pixel_values"])],
                                   reference["pixel_values"], atol=1e-5, rtol=1e-5)  # fmt: skip


def test_native_images_of_several_sizes_reach_the_model_with_their_grids(qwen):
    settings = preset("visualquality_r1")
    settings["sampling"].update(max_new_tokens=24)
    settings["prompt"].update(question="Rate it.")  # short: fast
    scorer = GenerativeScorer(qwen, None, settings["prompt"], settings["sampling"],
                              settings["parser"], native=NativeResolution(3136, 28 * 28 * 40))  # fmt: skip
    images = [torch.rand(3, 100, 160), torch.rand(3, 60, 60)]
    seen = scripted(qwen, ["<think>ok</think><answer>4.5</answer>", "<answer>1</answer>"])
    try:
        out = scorer.score({"pixels": torch.rand(2, 3, 112, 112), "images": images})
    finally:
        del qwen.model.generate
    assert out.scores.tolist() == [4.5, 1.0] and out.extras["parse_ok"] == [True, True]
    grids = [scorer.native.grid(qwen, *im.shape[1:]) for im in images]
    assert seen["grid"].tolist() == [list(g) for g in grids]
    tokens = (seen["ids"] == qwen.image_token_id).sum(1).tolist()
    assert tokens == [g[1] * g[2] // 4 for g in grids]
    assert "Picture 1: <|vision_start|>" in qwen.tokenizer.decode(seen["ids"][0])


def test_a_template_without_room_for_a_system_prompt_is_refused():
    class Other:
        family = "llava"

    with pytest.raises(ConfigError, match="prompt.system is set"):
        render_prompt(Other(), PromptSpec("q", system="s"), "")


def test_the_method_options_pick_the_checkpoints_and_show_the_authors_settings():
    from iqa_lightning.scorer import compose_scoring

    cfg = compose_scoring(["images=x", "method=q_insight"])
    assert cfg.method.name == "generative" and cfg.model.pretrained == "ByteDance/Q-Insight"
    assert cfg.model.subfolder == "score_degradation" and cfg.model.max_pixels == 12845056
    assert cfg.method.generation.sampling.top_p == 0.95
    assert preset("visualquality_r1")["parser"]["occurrence"] == "last"


@pytest.mark.slow
def test_the_scoring_cli_path_scores_by_generation_zero_shot():
    from PIL import Image

    from iqa_lightning.scorer import Scorer

    scorer = Scorer.from_config(
        model="tiny_qwen2_5_vl",
        overrides=["method=generative", "method.generation.sampling.max_new_tokens=2"],
        accelerator="cpu",
    )
    assert type(scorer.module.scorer).__name__ == "GenerativeScorer"
    assert not scorer.module.parameter_groups().get("lora")  # zero-shot: no LoRA
    images = [Image.new("RGB", (90, 60), (200, 30, 30)), Image.new("RGB", (64, 64))]
    # Two tokens of a random model hold no answer: every image a failure, at the midpoint.
    assert scorer(images).tolist() == [3.0, 3.0]


@pytest.mark.slow
def test_supervised_answers_train_and_the_test_rows_count_parse_failures(tmp_path, cache_dir):
    import csv

    from tests.training import train_in_process

    metrics = train_in_process(
        ["method=generative", "experiment=demo", "zero_shot=false", "trainer.max_epochs=1",
         "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "dataset.eval_batch_size=8",
         "method.generation.sampling.max_new_tokens=12"],
        tmp_path, cache_dir,
    )  # fmt: skip
    with open(tmp_path / "predictions_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"answer", "parse_ok", "parsed_samples", "explanation", "text"} <= set(rows[0])
    failures = sum(row["parse_ok"] == "False" for row in rows)
    assert metrics["test/parse_failures"] == failures
