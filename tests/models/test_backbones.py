"""The conformance suite of the backbone families: every registered family, each of its tiny
builders, with both tokenizer styles (SentencePiece as LLaMA's, byte-level as Qwen's)."""

import numpy as np
import pytest
import torch

from iqa_lightning.models.backbones import (
    FAMILIES,
    build_tiny_llava,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
    load_llava,
    load_qwen2_vl,
    tiny_builders,
)
from iqa_lightning.models.backbones.tokenizer import SPACE, TOKENIZER_KINDS

QUESTION = "Rate the technical quality of the image."
PREFIX = "The quality of the image is"
BUILDERS = {
    "llava": build_tiny_llava,
    "qwen2_vl": build_tiny_qwen2_vl,
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
}
VARIANTS = [
    (builder, kind)
    for name in sorted(FAMILIES)
    for builder in tiny_builders(name)
    for kind in TOKENIZER_KINDS
]


@pytest.fixture(
    scope="module",
    params=VARIANTS,
    ids=[f"{b.__name__.removeprefix('build_tiny_')}-{k}" for b, k in VARIANTS],
)
def backbone(request):
    builder, tokenizer = request.param
    return builder(tokenizer=tokenizer)


def test_every_family_is_registered_with_its_facts():
    assert set(FAMILIES) >= {"llava", "qwen2_vl"}
    for cls in FAMILIES.values():
        assert cls.model_class and cls.block_names and cls.tiny and cls.lora_targets


def test_declared_blocks_are_found_and_can_recompute(backbone):
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = backbone.blocks()
    layers = backbone.model.config.get_text_config().num_hidden_layers
    in_lm = [b for b in blocks if any(b is m for m in backbone.language_model().layers)]
    in_vision = [b for b in blocks if any(b is m for m in backbone.vision_tower().modules())]
    assert len(in_lm) == layers and len(in_vision) == layers
    assert all(isinstance(b, GradientCheckpointingLayer) for b in blocks)


def test_a_family_whose_blocks_are_missing_fails_loudly(backbone, monkeypatch):
    monkeypatch.setattr(type(backbone), "block_names", ("NoSuchLayer",))
    with pytest.raises(ValueError, match="none of the declared blocks"):
        backbone.set_gradient_checkpointing(True)


def test_quality_words_are_single_tokens_after_the_prefix_and_the_marker(backbone):
    words = ["excellent", "good", "fair", "poor", "bad", "fine", "high", "low"]
    after_prefix = [backbone.answer_token_id(PREFIX, w) for w in words]
    after_marker = [backbone.first_answer_token_id(w) for w in words]
    assert len(set(after_prefix)) == len(words) and len(set(after_marker)) == len(words)


def test_feature_hook_round_trip(backbone):
    ids = backbone.encode_prompt(QUESTION, PREFIX)
    pixels = torch.rand(2, 3, backbone.image_size, backbone.image_size)
    seen = []

    def identity(features):
        seen.append(features.shape)
        return features

    with torch.no_grad():
        plain = backbone.next_token_logits(pixels, ids)
        with backbone.feature_hook(identity):
            hooked = backbone.next_token_logits(pixels, ids)
        with backbone.feature_hook(lambda f: f * 0):
            blank = backbone.next_token_logits(pixels, ids)
    assert seen and seen[0][:2] == (2, backbone.features_per_image)
    assert seen[0][2] == backbone.vision_feature_dim
    assert torch.equal(plain, hooked) and not torch.allclose(plain, blank)


def test_logit_lens_reads_every_layer_and_ends_at_the_output(backbone):
    ids = backbone.encode_prompt(QUESTION, PREFIX)
    pixels = torch.rand(2, 3, backbone.image_size, backbone.image_size)
    with torch.no_grad():
        lens = backbone.layer_logits(pixels, ids)
        out = backbone.next_token_logits(pixels, ids)
    layers = backbone.model.config.get_text_config().num_hidden_layers
    assert lens.shape == (layers, 2, out.shape[-1]) and lens.dtype == torch.float32
    torch.testing.assert_close(lens[-1], out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(lens[0], out)


def _official_conversation(backbone, turns):
    """A conversation written out by hand in the family's published format."""
    if backbone.family == "mplug_owl2":  # conv_mplug_owl2 (TWO_NO_SYS): sep " ", sep2 "</s>"
        text = f"USER: <|image|>{turns[0][0]} ASSISTANT: {turns[0][1]}</s>"
        return text + "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in turns[1:])
    image = backbone.tokenizer.convert_ids_to_tokens(backbone.image_token_id)
    image *= backbone.num_image_tokens
    if backbone.family == "bunny":  # conv_bunny (TWO): system, sep " ", sep2 "<|endoftext|>"
        system = "A chat between a curious user and an artificial intelligence assistant. "
        system += (
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        )
        text = f"{system} USER: {image}\n{turns[0][0]} ASSISTANT: {turns[0][1]}<|endoftext|>"
        return text + "".join(f"USER: {q} ASSISTANT: {a}<|endoftext|>" for q, a in turns[1:])
    if backbone.family == "llava":  # LLaVA-1.5 (vicuna_v1): sep " ", sep2 "</s>"
        text = f"USER: {image}\n{turns[0][0]} ASSISTANT: {turns[0][1]}</s>"
        return text + "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in turns[1:])
    text = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n<|vision_start|>{image}<|vision_end|>{turns[0][0]}<|im_end|>\n"
        f"<|im_start|>assistant\n{turns[0][1]}<|im_end|>\n"
    )
    return text + "".join(
        f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
        for q, a in turns[1:]
    )


TURNS = [
    (QUESTION, "The quality of the image is good."),
    ("Why?", "The image is sharp, with little noise."),
]


def test_conversation_ids_are_the_official_text_tokenised_as_one(backbone):
    ids, labels = backbone.encode_conversation(TURNS)
    assert ids == backbone.tokenize(_official_conversation(backbone, TURNS))
    assert len(labels) == len(ids)


def _labelled_runs(labels):
    """Runs of consecutive labelled positions."""
    runs, current = [], []
    for position, label in enumerate(labels):
        if label == -100:
            runs, current = (runs + [current], []) if current else (runs, [])
        else:
            current.append(position)
    return runs + ([current] if current else [])


def test_labels_are_each_answer_and_its_end_of_turn(backbone):
    ids, labels = backbone.encode_conversation(TURNS)
    assert all(label in (-100, token) for token, label in zip(ids, labels, strict=True))
    text = _official_conversation(backbone, TURNS)
    offsets = backbone.encode_with_offsets(text)[1]
    runs = _labelled_runs(labels)
    covered = [text[offsets[run[0]][0] : offsets[run[-1]][1]].strip(" ") for run in runs]
    assert covered == [f"{answer}{backbone.template.answer_end}" for _, answer in TURNS]
    # An answer never starts with a lone word-boundary token the scoring prompt never shows.
    first = backbone.tokenizer.convert_ids_to_tokens([ids[run[0]] for run in runs])
    assert not {SPACE, "\u0120"} & set(first), first


def test_scoring_prompt_is_a_prefix_of_the_training_conversation(backbone):
    # Training teaches exactly the tokens the scoring prompt shows, then the level word.
    ids, labels = backbone.encode_conversation(TURNS)
    prompt = backbone.encode_prompt(QUESTION, PREFIX)[0].tolist()
    assert ids[: len(prompt)] == prompt
    assert ids[len(prompt)] == backbone.answer_token_id(PREFIX, "good") == labels[len(prompt)]


def test_frozen_and_kept_in_eval_mode(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert backbone.training and not backbone.model.training
    assert not any(m.training for m in backbone.model.modules())


def test_next_token_logits_and_pixel_gradient(backbone):
    ids = backbone.encode_prompt(QUESTION, PREFIX)
    assert int((ids == backbone.image_token_id).sum()) == backbone.num_placeholders
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


def test_first_answer_token_is_what_the_conversation_starts_the_answer_with(backbone):
    ids, _ = backbone.encode_conversation([("Which option?", "B")])
    marker = backbone.encode_prompt("Which option?")[0].tolist()
    assert ids[len(marker)] == backbone.first_answer_token_id("B")


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


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_5_vl"])
def test_real_loading_code_reads_a_local_checkpoint(tmp_path, family, monkeypatch):
    from transformers import CLIPImageProcessorPil, Qwen2VLImageProcessorPil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    built = BUILDERS[family]()
    if family == "llava":
        processor, load = CLIPImageProcessorPil(), load_llava
    else:
        processor, load = Qwen2VLImageProcessorPil(), load_qwen2_vl
    assert load.__func__ is type(built).from_pretrained.__func__  # one builder
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
    assert loaded.encode_conversation(TURNS) == built.encode_conversation(TURNS)


def test_missing_local_folder_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        load_llava(str(tmp_path / "nowhere"))


def test_from_pretrained_refuses_an_option_of_another_family_before_loading(tmp_path):
    # The folder does not exist: the option is refused before any file is looked for.
    with pytest.raises(TypeError, match="unexpected keyword argument 'template'"):
        load_llava(str(tmp_path / "nowhere"), template="qalign")


def test_offline_hub_id_not_in_cache_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # The hub library reads the variable once at import; set its constant as a fresh process would.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OSError, match="model.pretrained=.*HF_HUB_OFFLINE"):
        load_qwen2_vl("Qwen/Qwen2.5-VL-3B-Instruct")
