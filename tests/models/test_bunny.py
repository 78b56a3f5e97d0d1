"""Bunny-v1.0 read into transformers' LLaVA equals the original code: the fixture
tests/fixtures/bunny_tiny was recorded with yeppp27/Q-Adapt's Bunny on transformers 4.37.2."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iqa_lightning.models.backbones.bunny import BunnyBackbone, build_tiny_bunny
from iqa_lightning.models.backbones.bunny_checkpoint import save_converted

FIXTURE = Path(__file__).parents[1] / "fixtures" / "bunny_tiny"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text())
TENSORS = load_file(str(FIXTURE / "golden.safetensors"))


@pytest.fixture(scope="module")
def bunny():
    return BunnyBackbone.from_pretrained(str(FIXTURE), dtype="float32", attn_implementation="eager")


def _spliced(backbone, ids):
    """Our ids with the run of image tokens as the original's one -200."""
    ids = ids[0].tolist()
    start = ids.index(backbone.image_token_id)
    return ids[:start] + [GOLDEN["image_token_index"]] + ids[start + backbone.num_image_tokens :]


@pytest.mark.parametrize("key", ["qalign", "assistant"])
def test_logits_and_scores_equal_the_original(bunny, key):
    prefix = GOLDEN["answer_prefix"] if key == "qalign" else ""
    ids = bunny.encode_prompt(GOLDEN["question"], prefix)
    assert _spliced(bunny, ids) == GOLDEN["prompts"][key]["input_ids"]
    pixels = TENSORS["pixel_values"] * 0.5 + 0.5  # back to [0, 1]: SigLIP's mean / std are 0.5
    with torch.no_grad():
        logits = bunny.next_token_logits(pixels, ids)
    torch.testing.assert_close(logits, TENSORS[f"logits_{key}"], atol=1e-4, rtol=0)
    level_ids = [bunny.answer_token_id(GOLDEN["answer_prefix"], w) for w in GOLDEN["levels"]]
    assert level_ids == GOLDEN["level_ids"]
    probs = torch.softmax(logits[:, level_ids], dim=-1)
    scores = probs @ torch.tensor(GOLDEN["level_weights"], dtype=torch.float32)
    expected = torch.tensor(GOLDEN["prompts"][key]["scores"])
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    assert (expected.max() - expected.min()) > 1e-2  # the images matter


def test_published_layout_is_converted_exactly(bunny):
    config = bunny.model.config
    assert config.vision_config.num_hidden_layers == 2  # the tower's 3, last one dropped
    assert config.vision_feature_layer == -1 and config.vision_feature_select_strategy == "full"
    assert bunny.num_image_tokens == 729 and bunny.vision_feature_dim == 32
    # <image> lies past Bunny's 431 ids: one row appended, trimmed from the logits.
    assert bunny.image_token_id == 431 and bunny.vocab_size == 431
    assert bunny.model.lm_head.bias is None
    original = load_file(str(FIXTURE / "model-00002-of-00002.safetensors"))
    original.update(load_file(str(FIXTURE / "model-00001-of-00002.safetensors")))
    ours = bunny.model.state_dict()
    pairs = {
        "model.mm_projector.0.weight": "model.multi_modal_projector.linear_1.weight",
        "model.layers.1.self_attn.dense.bias": "model.language_model.layers.1.self_attn.dense.bias",
        "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight": (
            "model.vision_tower.encoder.layers.1.mlp.fc2.weight"
        ),
    }
    for theirs, mine in pairs.items():
        assert torch.equal(original[theirs], ours[mine]), theirs


def test_conversion_round_trip(bunny, tmp_path):
    save_converted(bunny, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llava"
    again = BunnyBackbone.from_pretrained(str(tmp_path), dtype="float32")
    ids = bunny.encode_prompt(GOLDEN["question"], GOLDEN["answer_prefix"])
    assert torch.equal(again.encode_prompt(GOLDEN["question"], GOLDEN["answer_prefix"]), ids)
    pixels = TENSORS["pixel_values"][:1] * 0.5 + 0.5
    with torch.no_grad():
        torch.testing.assert_close(
            again.next_token_logits(pixels, ids), bunny.next_token_logits(pixels, ids)
        )


def test_other_projector_is_refused(tmp_path):
    for item in FIXTURE.iterdir():
        (tmp_path / item.name).symlink_to(item)
    config = json.loads((FIXTURE / "config.json").read_text())
    config["mm_projector_type"] = "ldp"
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mm_projector_type='ldp'"):
        BunnyBackbone.from_pretrained(str(tmp_path), dtype="float32")


def test_tiny_bunny_is_a_siglip_phi_llava():
    tiny = build_tiny_bunny()
    assert type(tiny.language_model()).__name__ == "PhiModel"
    assert type(tiny.final_norm()).__name__ == "LayerNorm"
    assert tiny.num_image_tokens == 64 and tiny.features_have_class_token is False


def test_pad_square_siglip_gives_the_original_pixel_values(bunny):
    # load_rgb -> expand2square with SigLIP's mean colour (127) -> bicubic resize -> [0, 1] ->
    # SigLIP normalisation: the pixel_values the original pre-processing recorded.
    from iqa_lightning.data.images import array_to_tensor, load_rgb, resize_to_array

    pixels = []
    for name in GOLDEN["images"]:
        image = load_rgb(FIXTURE / "images" / name)
        assert image.size[0] != image.size[1]  # the padding is exercised
        array = resize_to_array(image, bunny.image_size, "bicubic", resize="pad_square_siglip")
        pixels.append(array_to_tensor(array))
    ours = bunny.pixel_inputs(torch.stack(pixels))["pixel_values"]
    torch.testing.assert_close(ours, TENSORS["pixel_values"], atol=1e-5, rtol=0)
    assert bunny.resize == "pad_square_siglip"
