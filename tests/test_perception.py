"""Perception-then-inference (arXiv 2512.09555): descriptions, the inference prompt, the
given / generated routing and what each phase trains. The CLI runs: test_perception_cli.py."""

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from iqa_lightning.data.datasets.synthetic import generate_synthetic_kadid
from iqa_lightning.data.instruct.descriptions import PERCEPTION_QUESTION
from iqa_lightning.data.instruct.synthetic import DESCRIPTIONS_FILE, generate_synthetic_instruct
from iqa_lightning.data.instruct.templates import STRENGTHS
from iqa_lightning.models.backbones import build_tiny_llava, build_tiny_qwen2_vl
from iqa_lightning.models.lora import lora_parameters
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.perception import (
    DescriptionError,
    DescriptionScorer,
    QInstructDescriptions,
    SyntheticDescriptions,
    inference_batch,
    inference_prompt,
)
from iqa_lightning.perception.descriptions import description_source
from iqa_lightning.perception.module import PerceptionInferenceModule

QUESTION = "Rate the technical quality of the image."
WORDS = partial(WordScore, ["good", "fine", "poor", "bad"], [1, 1, 0, 0], question=QUESTION)


def fields(description: str) -> dict[str, str]:
    """``{"Content": ..., "Distortion": ..., "Sharpness": ...}`` of a synthetic description."""
    return dict(part.split(": ", 1) for part in description.rstrip(".").split(". "))


def _stats(array: np.ndarray) -> dict[str, float]:
    a = array.astype(np.float64)
    g = a.mean(-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return {
        "mean": g.mean(),
        "std": g.std(),
        "edges": np.abs(lap).mean(),
        "saturation": (a.max(-1) - a.min(-1)).mean(),
        "flat": (np.abs(np.diff(g, axis=1)) == 0).mean(),
    }


# The feature a description says is affected -> (pixel statistic, sign of its change against
# the reference): what the image must really show for the description to be true.
CLAIMS = {
    ("Sharpness", "blurred"): ("edges", -1),
    ("Sharpness", "pixelated"): ("flat", +1),
    ("Noise", "noisy"): ("edges", +1),
    ("Exposure", "overexposed"): ("mean", +1),
    ("Colour", "oversaturated"): ("saturation", 0),  # >= (grey references stay grey)
    ("Contrast", "low"): ("std", -1),
}


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("perception") / "kadid"
    return generate_synthetic_kadid(root, image_size=64, levels=3, n_refs=3)


def test_descriptions_state_what_the_pixels_show(synthetic_set):
    source = SyntheticDescriptions(levels=3)
    with (synthetic_set / "dmos.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    checked, strengths, scores = 0, [], []
    for row in rows:
        described = fields(source(row["dist_img"]))
        image = _stats(np.asarray(Image.open(synthetic_set / "images" / row["dist_img"])))
        ref = _stats(np.asarray(Image.open(synthetic_set / "images" / row["ref_img"])))
        claimed = [(f, v) for f, v in described.items() if (f, v) in CLAIMS]
        assert len(claimed) <= 1, described
        for claim in claimed:
            stat, sign = CLAIMS[claim]
            change = image[stat] - ref[stat]
            assert change * sign > 0 if sign else change >= 0, (row["dist_img"], claim, change)
            checked += 1
        if described["Exposure"] == "normal":  # every other distortion keeps the exposure
            assert abs(image["mean"] - ref["mean"]) < 8, row["dist_img"]
        if described["Compression"] == "JPEG artifacts":
            assert row["dist_img"].split("_")[1] == "03"  # KADID-style type 3: JPEG
        strengths.append(_strength(described["Distortion"]))
        scores.append(float(row["dmos"]))
    assert checked == 6 * 3 * 3  # six measurable types x 3 references x 3 levels
    # Stronger described distortions go with lower scores.
    assert spearmanr(strengths, scores).statistic < -0.3


def _strength(text: str) -> int:
    """Index in STRENGTHS of the strength word a ``Distortion`` field starts with."""
    matches = [s for s in STRENGTHS if text.startswith(s + " ")]
    return STRENGTHS.index(max(matches, key=len))


def test_descriptions_name_content_and_never_the_quality():
    source = SyntheticDescriptions(levels=5)
    cat = fields(source("I03_01_05.png"))
    assert cat["Content"] == "a cat" and cat["Distortion"] == "very strong blur"
    assert fields(source("I03_02_01.png"))["Noise"] == "noisy"
    assert fields(source("I03.png"))["Distortion"] == "none"
    for i in range(1, 8):
        text = source(f"I01_{i:02d}_03.png").lower()
        assert not any(word in text.split() for word in ("good", "poor", "bad", "excellent"))
    with pytest.raises(DescriptionError, match="koniq_0001.jpg"):
        source("koniq_0001.jpg")
    with pytest.raises(DescriptionError, match="level 9"):
        source("I01_01_09.png")


def test_generator_writes_the_same_descriptions_in_qinstruct_format(synthetic_set, tmp_path):
    out = generate_synthetic_instruct(synthetic_set, tmp_path / "instruct")
    records = json.loads((out / DESCRIPTIONS_FILE).read_text())
    assert records and all(r["conversations"][0]["value"] == f"<image>\n{PERCEPTION_QUESTION}"
                           for r in records)  # fmt: skip
    read = QInstructDescriptions(out / DESCRIPTIONS_FILE)
    source = SyntheticDescriptions(levels=3)
    for record in records:
        name = Path(record["image"]).name
        assert read(name) == source(name) == record["conversations"][1]["value"]
    assert len(read.table) == len(records)
    with pytest.raises(ValueError, match="question_pattern"):
        description_source("qinstruct", json_path=out / DESCRIPTIONS_FILE, question_pattern="zz")


@pytest.mark.parametrize("build", [build_tiny_llava, build_tiny_qwen2_vl])
def test_inference_prompt_spans_with_and_without_the_image(build):
    backbone = build()
    decode = backbone.tokenizer.decode
    text = "Content: a cat. Distortion: strong blur."
    blind = inference_prompt(backbone, QUESTION, text, image=False, answer_prefix="It is")
    seen = inference_prompt(backbone, QUESTION, text, image=True, answer_prefix="It is")
    assert backbone.image_token_id not in blind.ids and blind.image is None
    start, end = seen.image
    assert end - start == backbone.num_placeholders
    assert set(seen.ids[start:end]) == {backbone.image_token_id}
    assert seen.ids.count(backbone.image_token_id) == backbone.num_placeholders
    for prompt in (blind, seen):
        assert decode(prompt.ids[slice(*prompt.question)]).strip() == QUESTION
        assert decode(prompt.ids[slice(*prompt.description)]).strip() == text
        assert prompt.description[1] <= prompt.question[0]  # description, then the question
        assert decode(prompt.ids[prompt.answer_position :]).strip().endswith("is")
    # Batched: left padding shifts every span, the rows stay what they were alone.
    batch = inference_batch(backbone, QUESTION, ["short.", text], image=False)
    alone = inference_prompt(backbone, QUESTION, "short.", image=False)
    pad = batch.ids.shape[1] - len(alone.ids)
    assert pad > 0 and batch.mask[0, :pad].sum() == 0
    assert batch.ids[0, pad:].tolist() == alone.ids
    assert batch.prompts[0].description == (alone.description[0] + pad, alone.description[1] + pad)
    assert decode(batch.ids[0, slice(*batch.prompts[0].description)]).strip() == "short."


@pytest.mark.parametrize("build", [build_tiny_llava, build_tiny_qwen2_vl])
def test_the_describe_then_rate_dialogue_is_the_perception_conversation_then_the_question(build):
    """``inference.image=dialogue``: the first turn is exactly the conversation the perception
    phase trains (perception question with the image, the description as the answer), then a
    second user turn asks the score question; the spans find both, the score read after them."""
    backbone = build()
    decode = backbone.tokenizer.decode
    text = "Content: a cat. Distortion: strong blur."
    prompt = inference_prompt(
        backbone, QUESTION, text, image=True, answer_prefix="It is", ask=PERCEPTION_QUESTION
    )
    trained, _ = backbone.render_conversation([(PERCEPTION_QUESTION, text)])
    t = backbone.template
    assert prompt.text == trained + t.next_user.format(question=QUESTION) + t.answer_lead + "It is"
    assert prompt.ids.count(backbone.image_token_id) == backbone.num_placeholders
    assert decode(prompt.ids[slice(*prompt.description)]).strip() == text
    assert decode(prompt.ids[slice(*prompt.question)]).strip() == QUESTION
    assert prompt.image[1] <= prompt.description[0] < prompt.description[1] <= prompt.question[0]
    with pytest.raises(ValueError, match="shows the image in its first turn"):
        inference_prompt(backbone, QUESTION, text, image=False, ask=PERCEPTION_QUESTION)
    torch.manual_seed(0)
    size = backbone.image_size
    pixels, noise = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)
    truth = SyntheticDescriptions(5).many(["I01_01_05.png", "I02_03_01.png"])
    dialogue = _scorer(backbone, description="given", image="dialogue")
    visible = _scorer(backbone, description="given", image="visible")
    with torch.no_grad():  # the image reaches the model, in another prompt than visible's
        assert not torch.allclose(
            dialogue.scores_from(noise, truth), dialogue.scores_from(pixels, truth)
        )
        assert not torch.allclose(dialogue.scores_from(pixels, truth),
                                  visible.scores_from(pixels, truth))  # fmt: skip


def _scorer(backbone, **kwargs):
    return DescriptionScorer(
        backbone, NoPrompt(), WORDS(), SyntheticDescriptions(5), max_new_tokens=8, **kwargs
    )


def test_given_and_generated_descriptions_route_where_they_say():
    torch.manual_seed(0)
    backbone = build_tiny_llava()
    pixels = torch.rand(2, 3, 64, 64)
    ids = ["I01_01_05.png", "I02_03_01.png"]
    batch = {"pixels": pixels, "image_id": ids}
    truth = SyntheticDescriptions(5).many(ids)
    given = _scorer(backbone, description="given")
    generated = _scorer(backbone, description="generated")
    with torch.no_grad():
        own = generated.generated(pixels)
        assert own != truth  # a random model does not write the ground truth
        torch.testing.assert_close(given.score(batch).scores, given.scores_from(pixels, truth))
        torch.testing.assert_close(generated.score(batch).scores, given.scores_from(pixels, own))
        torch.testing.assert_close(generated(pixels), generated.score(batch).scores)
        assert not torch.allclose(given.score(batch).scores, generated.score(batch).scores)
        # image=none: the pixels never reach the model; visible: they do.
        noise = torch.rand_like(pixels)
        torch.testing.assert_close(
            given.scores_from(noise, truth), given.scores_from(pixels, truth)
        )
        seen = _scorer(backbone, description="given", image="visible")
        assert not torch.allclose(seen.scores_from(noise, truth), seen.scores_from(pixels, truth))
    with pytest.raises(ValueError, match="inference.description=given needs the images' ids"):
        given.score({"pixels": pixels})
    with pytest.raises(ValueError, match="inference.image='hidden'"):
        _scorer(backbone, image="hidden")


def _module(keep_weight=1.0):
    adam = partial(torch.optim.AdamW, lr=1e-2)
    phases = [
        {"name": "perception", "trainable": ["lora"], "epochs": 1, "optimizer": adam},
        {"name": "inference", "trainable": ["lora"], "epochs": None, "optimizer": adam},
    ]
    return PerceptionInferenceModule(
        build_tiny_llava(), NoPrompt(), WORDS(), phases, SyntheticDescriptions(5),
        keep_weight=keep_weight, max_new_tokens=8, lora={"r": 4, "alpha": 8, "dropout": 0.0},
    )  # fmt: skip


def test_each_phase_trains_lora_on_its_objective():
    torch.manual_seed(0)
    module = _module()
    scorer = module.scorer
    batch = {
        "pixels": torch.rand(2, 3, 64, 64),
        "image_id": ["I01_01_05.png", "I02_03_01.png"],
        "target": torch.tensor([0.2, 0.9]),
        "mos_raw": torch.tensor([1.8, 4.6]),
    }
    lora = set(lora_parameters(module.backbone).values())
    assert module.describing and module.trainable_groups == ["lora"]
    # Perception: the description loss, gradients on LoRA only.
    loss = module.training_step(batch, 0)
    torch.testing.assert_close(loss, scorer.describe_loss(batch["pixels"], batch["image_id"]))
    loss.backward()
    grads = {p for p in module.parameters() if p.grad is not None}
    assert grads == lora and sum(p.grad.abs().sum() for p in lora) > 0  # B starts at 0
    module.zero_grad()
    # Inference: the score after the ground-truth description, plus keep_weight x description.
    module.set_phase(1)
    assert not module.describing and module.trainable_groups == ["lora"]
    truth = scorer.ground_truth(batch["image_id"])
    score = torch.nn.functional.mse_loss(
        scorer.scores_from(batch["pixels"], truth), batch["target"]
    )
    describe = scorer.describe_loss(batch["pixels"], batch["image_id"])
    torch.testing.assert_close(module.training_step(batch, 0), score + describe)
    only_score = _module(keep_weight=0.0)
    only_score.load_state_dict(module.state_dict())
    only_score.set_phase(1)
    loss = only_score.training_step(batch, 0)
    torch.testing.assert_close(loss, score)
    loss.backward()
    assert sum(p.grad.abs().sum() for p in lora_parameters(only_score.backbone).values()) > 0
    # The tuned tensors are LoRA's, never a frozen weight, and hparams stay plain.
    assert set(module.tuned_state_dict()) == {
        f"backbone.{n}" for n in lora_parameters(module.backbone)
    }
    assert "descriptions" not in module.hparams


def test_bad_perception_settings_are_named():
    with pytest.raises(ValueError, match=r"perception.phases names \['describe'\]"):
        PerceptionInferenceModule(
            build_tiny_llava(), NoPrompt(), WORDS(),
            [{"name": "perception", "trainable": [], "epochs": None}],
            SyntheticDescriptions(5), perception_phases=["describe"],
        )  # fmt: skip
    with pytest.raises(ValueError, match="kind='blip'"):
        description_source("blip")
