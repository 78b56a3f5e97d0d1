"""Native mPLUG-Owl2 against the original code's outputs (tests/fixtures/mplug_owl2_tiny: a tiny
random model saved and run by Q-Align's original classes on transformers 4.37.2), and loading of
the published checkpoint layout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from iqa_lightning.data.images import array_to_tensor, load_rgb, pad_square, resize_to_array
from iqa_lightning.models.backbones import MplugOwl2Backbone, build_tiny_mplug_owl2
from iqa_lightning.models.score import WordScore

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mplug_owl2_tiny"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text())
# (golden prompt, template, question, answer prefix)
LAYOUTS = {
    "q_align": (
        "qalign",
        "How would you rate the quality of this image?",
        "The quality of the image is",
    ),
    "visual_prompt": ("owl2", "Rate the technical quality of the image.", ""),
}


@pytest.fixture(scope="module")
def tensors():
    return load_file(FIXTURE / "golden.safetensors")


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def loaded(request):
    return MplugOwl2Backbone.from_pretrained(
        str(FIXTURE), dtype="float32", attn_implementation=request.param
    )


def _with_template(backbone, template):
    return MplugOwl2Backbone(
        backbone.model,
        backbone.tokenizer,
        backbone.image_size,
        backbone.image_mean.flatten().tolist(),
        backbone.image_std.flatten().tolist(),
        template=template,
    )


@pytest.mark.parametrize("prompt", sorted(LAYOUTS))
def test_logits_and_q_align_scores_equal_the_original(loaded, tensors, prompt):
    template, question, prefix = LAYOUTS[prompt]
    backbone = _with_template(loaded, template)
    ids = backbone.encode_prompt(question, prefix)
    assert ids[0].tolist() == GOLDEN["prompts"][prompt]["input_ids"]
    torch.testing.assert_close(ids[0], tensors[f"{prompt}.input_ids"])
    with torch.no_grad():
        logits = backbone.model(input_ids=ids.expand(3, -1), pixel_values=tensors["pixel_values"])
    logits = logits.logits[:, -1].float()
    torch.testing.assert_close(logits, tensors[f"{prompt}.logits"], atol=1e-4, rtol=0)
    score = WordScore(GOLDEN["level_words"], GOLDEN["level_weights"], question, prefix)
    score.bind(backbone)
    assert score.token_ids.tolist() == GOLDEN["level_ids"]
    expected = torch.tensor(GOLDEN["prompts"][prompt]["scores"])
    torch.testing.assert_close(score(logits), expected, atol=1e-6, rtol=0)


def test_vision_tower_and_abstractor_equal_the_original(loaded, tensors):
    with torch.no_grad():
        vision = loaded.vision_tower()(tensors["pixel_values"])
        features = loaded.model.model.encode_images(tensors["pixel_values"])
    torch.testing.assert_close(vision, tensors["vision_last_hidden_state"], atol=1e-5, rtol=0)
    torch.testing.assert_close(features, tensors["image_features"], atol=1e-5, rtol=0)


def test_our_pipeline_reproduces_the_original_preprocessing(tensors):
    # load_rgb -> pad_square (expand2square, mean colour) -> bicubic resize -> [0, 1] ->
    # normalise with the checkpoint's CLIP statistics == CLIPImageProcessor on expand2square.
    backbone = build_tiny_mplug_owl2()
    assert list(GOLDEN["expand2square_background"]) == [122, 116, 104]
    pixels = []
    for name in GOLDEN["images"]:
        image = load_rgb(FIXTURE / "images" / f"{name}.png")
        assert list(image.size) == GOLDEN["image_sizes"][name]
        square = torch.from_numpy(np.array(pad_square(image)))
        assert torch.equal(square, tensors[f"square.{name}"])
        array = resize_to_array(image, backbone.image_size, "bicubic", resize="pad_square")
        pixels.append(array_to_tensor(array))
    ours = backbone.pixel_inputs(torch.stack(pixels))["pixel_values"]
    torch.testing.assert_close(ours, tensors["pixel_values"], atol=1e-5, rtol=0)


def test_published_config_is_read_as_it_is(loaded):
    config = loaded.model.config
    assert config.model_type == "mplug_owl2" and config.rope_parameters["rope_theta"] == 10000.0
    assert config.vision_config.image_size == 64 and config.vision_config.patch_size == 8
    assert config.abstractor_config.num_learnable_queries == 8
    assert loaded.num_image_tokens == 9 and loaded.num_placeholders == 1
    assert loaded.image_size == 64 and loaded.resize == "pad_square"
    assert getattr(loaded.tokenizer, "legacy", None) is True  # as tokenizer_config.json says


def test_sharded_safetensors_load_the_same_model(tmp_path, tensors):
    original = MplugOwl2Backbone.from_pretrained(str(FIXTURE), dtype="float32")
    original.model.save_pretrained(tmp_path, max_shard_size="300KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    for name in ("config.json", "tokenizer.model", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((FIXTURE / name).read_bytes())  # the original config
    for name in ("special_tokens_map.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((FIXTURE / name).read_bytes())
    sharded = MplugOwl2Backbone.from_pretrained(str(tmp_path), dtype="float32")
    theirs = sharded.model.state_dict()
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    ids = original.encode_prompt("Rate the technical quality of the image.")
    with torch.no_grad():
        a = original.next_token_logits(tensors["pixel_values"], ids)
        b = sharded.next_token_logits(tensors["pixel_values"], ids)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_missing_weights_and_foreign_configs_are_named(tmp_path):
    for name in ("config.json", "tokenizer.model", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((FIXTURE / name).read_bytes())
    state = torch.load(FIXTURE / "pytorch_model.bin", weights_only=True)
    state.pop("model.vision_model.post_layernorm.weight")
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="model.pretrained=.*lacks 1 weights.*post_layernorm"):
        MplugOwl2Backbone.from_pretrained(str(tmp_path), dtype="float32")
    config = json.loads((FIXTURE / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(ValueError, match="model_type 'llava', not 'mplug_owl2'"):
        MplugOwl2Backbone.from_pretrained(str(tmp_path), dtype="float32")


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        MplugOwl2Backbone.from_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="model.trust_remote_code"):
        MplugOwl2Backbone.from_pretrained(str(FIXTURE), trust_remote_code=True)
    with pytest.raises(ValueError, match="model.template='chatml'"):
        build_tiny_mplug_owl2(template="chatml")
    with pytest.raises(ValueError, match="model.image_size=32"):
        MplugOwl2Backbone.from_pretrained(str(FIXTURE), image_size=32, dtype="float32")


def test_offline_hub_id_not_in_cache_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OSError, match="model.pretrained='q-future/one-align'.*HF_HUB_OFFLINE"):
        MplugOwl2Backbone.from_pretrained("q-future/one-align")


def test_modality_mask_routes_image_tokens_to_the_visual_branch():
    backbone = build_tiny_mplug_owl2()
    ids = backbone.encode_prompt("Rate the technical quality of the image.")
    model = backbone.model.model
    features = torch.randn(1, backbone.num_image_tokens, model.config.hidden_size)
    embeds, modality, mask, _ = model.splice(ids, torch.ones_like(ids), features)
    at = ids[0].tolist().index(-200)
    span = slice(at, at + backbone.num_image_tokens)
    assert embeds.shape[1] == ids.shape[1] - 1 + backbone.num_image_tokens
    assert torch.equal(embeds[0, span], features[0])
    assert modality[0, span].eq(1).all() and modality.sum() == backbone.num_image_tokens
    assert mask.eq(1).all()
    # Swapping the branches of one layer's visual key projection changes the answer.
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone.next_token_logits(pixels, ids)
        k = backbone.model.model.layers[0].self_attn.k_proj.multiway
        k[1].weight.copy_(k[0].weight)
        after = backbone.next_token_logits(pixels, ids)
    assert not torch.allclose(before, after)


def test_conversation_labels_skip_the_spliced_image():
    backbone = build_tiny_mplug_owl2()
    ids, labels = backbone.encode_conversation([("Rate it.", "The quality of the image is good.")])
    pixels = torch.rand(1, 3, 64, 64)
    loss = backbone.lm_loss(
        pixels,
        torch.tensor([ids]),
        torch.ones(1, len(ids), dtype=torch.long),
        torch.tensor([labels]),
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    assert labels[ids.index(-200)] == -100
