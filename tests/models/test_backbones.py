import numpy as np
import pytest
import torch

from iqa_lightning.models.backbones import (
    build_tiny_llava,
    build_tiny_qwen2_vl,
    load_llava,
    load_qwen2_vl,
)

QUESTION = "Rate the technical quality of the image."
PREFIX = "The quality of the image is"


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def backbone(request):
    return build_tiny_llava() if request.param == "llava" else build_tiny_qwen2_vl()


def test_frozen_and_kept_in_eval_mode(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert backbone.training and not backbone.model.training
    assert not any(m.training for m in backbone.model.modules())


def test_next_token_logits_and_pixel_gradient(backbone):
    ids = backbone.encode_prompt(QUESTION, PREFIX)
    assert int((ids == backbone.image_token_id).sum()) == backbone.num_image_tokens
    pixels = torch.rand(3, 3, backbone.image_size, backbone.image_size, requires_grad=True)
    logits = backbone.next_token_logits(pixels, ids)
    assert logits.shape == (3, len(backbone.tokenizer)) and logits.dtype == torch.float32
    # Different images give different answers: the vision path is wired in.
    assert not torch.allclose(logits[0], logits[1])
    logits[:, backbone.answer_token_id(PREFIX, "good")].sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_batched_equals_one_by_one(backbone):
    ids = backbone.encode_prompt(QUESTION, PREFIX)
    pixels = torch.rand(2, 3, backbone.image_size, backbone.image_size)
    with torch.no_grad():
        both = backbone.next_token_logits(pixels, ids)
        first = backbone.next_token_logits(pixels[:1], ids)
    torch.testing.assert_close(both[:1], first, atol=1e-4, rtol=1e-4)


def test_same_seed_builds_the_same_weights():
    a, b = build_tiny_qwen2_vl(seed=3), build_tiny_qwen2_vl(seed=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = build_tiny_qwen2_vl(seed=4)
    assert not torch.equal(next(iter(a.parameters())), next(iter(c.parameters())))


def test_wrong_input_size_is_named():
    backbone = build_tiny_llava()
    with pytest.raises(ValueError, match="model.image_size"):
        backbone.normalize(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="model.image_size"):
        build_tiny_qwen2_vl(image_size=100)


def _uint8_image(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_llava_pixels_match_the_clip_image_processor():
    from transformers import CLIPImageProcessorPil

    backbone = build_tiny_llava()
    image = _uint8_image(backbone.image_size)
    reference = CLIPImageProcessorPil(do_resize=False, do_center_crop=False)(
        images=[image], return_tensors="pt"
    )["pixel_values"]
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ours = backbone.pixel_inputs(pixels)["pixel_values"]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_qwen_patchify_matches_the_qwen2_vl_image_processor():
    from transformers import Qwen2VLImageProcessorPil

    backbone = build_tiny_qwen2_vl()
    images = [_uint8_image(backbone.image_size, seed) for seed in range(2)]
    reference = Qwen2VLImageProcessorPil(do_resize=False)(images=images, return_tensors="pt")
    pixels = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images]).float() / 255
    ours = backbone.pixel_inputs(pixels)
    torch.testing.assert_close(ours["image_grid_thw"], reference["image_grid_thw"])
    torch.testing.assert_close(
        ours["pixel_values"], reference["pixel_values"], atol=1e-5, rtol=1e-5
    )


def _save(backbone, folder, processor):
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_real_loading_code_reads_a_local_checkpoint(tmp_path, family, monkeypatch):
    from transformers import CLIPImageProcessorPil, Qwen2VLImageProcessorPil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if family == "llava":
        built, processor, load = build_tiny_llava(), CLIPImageProcessorPil(), load_llava
    else:
        built, processor, load = build_tiny_qwen2_vl(), Qwen2VLImageProcessorPil(), load_qwen2_vl
    _save(built, tmp_path, processor)
    loaded = load(str(tmp_path), image_size=built.image_size, dtype="float32")
    assert type(loaded) is type(built)
    ids = built.encode_prompt(QUESTION, PREFIX)
    assert torch.equal(loaded.encode_prompt(QUESTION, PREFIX), ids)
    pixels = torch.rand(2, 3, built.image_size, built.image_size)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.next_token_logits(pixels, ids), built.next_token_logits(pixels, ids)
        )
    assert not any(p.requires_grad for p in loaded.parameters())


def test_missing_local_folder_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        load_llava(str(tmp_path / "nowhere"))


def test_offline_hub_id_not_in_cache_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # The hub library reads the variable once at import; set its constant as a fresh process would.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OSError, match="model.pretrained=.*HF_HUB_OFFLINE"):
        load_qwen2_vl("Qwen/Qwen2.5-VL-3B-Instruct")
