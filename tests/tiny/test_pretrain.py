"""The trained tiny models: the recipe reruns and its losses fall; the committed folders load
through the normal loaders and match their recorded hashes."""

import hashlib
import json

import numpy as np
import pytest
import torch

from iqa_lightning.models.score import WordScore
from iqa_lightning.tiny.pretrain import (
    CLIPRecipe,
    LMMRecipe,
    build_examples,
    build_lmm,
    focused_examples,
    paired_examples,
    pretraining_sources,
    train_clip,
    train_lmm,
    train_vision,
)
from iqa_lightning.tiny.trained import (
    CLIP_FOLDER,
    LMM_FOLDER,
    TRAINED_DIR,
    load_tiny_clip,
    load_tiny_llava,
    trained_folder,
)
from iqa_lightning.tiny.world import DISTORTION_KINDS, GREY, HELD_OUT_PHOTOS, PHOTOS


def test_lmm_recipe_loss_falls_in_a_few_steps():
    recipe = LMMRecipe(samples=48, vision_steps=6, vision_focus=8, steps=10, batch_size=8, warmup=2)
    backbone, losses = train_lmm(recipe, log_every=100)
    assert np.mean(losses[-3:]) < losses[0] - 0.5, losses
    assert not any(p.requires_grad for p in backbone.parameters())


def test_focused_vision_scenes_have_one_kind_alone_on_seen_photographs():
    images, scenes, pools = focused_examples(3, 32, seed=0)
    assert images.shape == (27, 32, 32, 3) and [len(p) for p in pools] == [3] * 9
    for kind, pool in zip([*DISTORTION_KINDS, None], pools, strict=True):
        for i in pool:
            assert scenes[i].source in PHOTOS and scenes[i].source not in HELD_OUT_PHOTOS
            assert [name for name, _ in scenes[i].distortions] == ([kind.name] if kind else [])


def test_paired_vision_scenes_have_the_kind_and_one_other_on_seen_photographs():
    images, scenes, pools = paired_examples(4, 32, seed=0)
    assert images.shape == (32, 32, 32, 3) and [len(p) for p in pools] == [4] * 8
    colour = {kind.name for kind in DISTORTION_KINDS if kind.colour}
    for kind, pool in zip(DISTORTION_KINDS, pools, strict=True):
        for i in pool:
            names = [name for name, _ in scenes[i].distortions]
            assert scenes[i].source in PHOTOS and scenes[i].source not in HELD_OUT_PHOTOS
            assert kind.name in names and len(set(names)) == 2, names
            assert names == sorted(names, key=[k.name for k in DISTORTION_KINDS].index)
            if scenes[i].source in GREY:  # colour kinds never on a grey photograph
                assert not colour & set(names), (scenes[i].source, names)
    # the same seed draws the same scenes (the recipe reruns)
    assert paired_examples(4, 32, seed=0)[1] == scenes


@pytest.mark.parametrize(
    "focus, pairs, regress, source_head",
    [(4, 0.0, 0.0, False), (4, 0.5, 10.0, False), (4, 1.0, 0.0, True), (0, 0.0, 10.0, True)],
)
def test_vision_stage_trains_every_head_from_either_batch_source(
    focus, pairs, regress, source_head
):
    recipe = LMMRecipe(
        samples=16, vision_steps=3, vision_focus=focus, vision_pairs=pairs,
        vision_regress=regress, vision_source_head=source_head, batch_size=8, warmup=1,
    )  # fmt: skip
    backbone = build_lmm(recipe)
    before = [p.detach().clone() for p in backbone.vision_tower().parameters()]
    images, scenes = build_examples(16, 64, 0, pretraining_sources())
    losses = train_vision(backbone, images, scenes, recipe, log_every=100)
    # one cross-entropy per kind (and per source), averaged: about ln(5) at the start; plus
    # ``regress`` times the strengths' mean squared error (in [0, 1] at the start)
    assert len(losses) == 3 and 1.0 < losses[0] < 4.0 + regress, losses
    after = list(backbone.vision_tower().parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_vision_focus_below_half_a_batch_is_refused_by_name():
    recipe = LMMRecipe(samples=16, vision_steps=1, vision_focus=3, batch_size=8)
    with pytest.raises(ValueError, match=r"vision_focus=3 is below half the batch \(4\)"):
        train_vision(build_lmm(recipe), *build_examples(16, 64, 0, pretraining_sources()), recipe)


@pytest.mark.parametrize(
    "focus, pairs, message",
    [
        (4, 1.5, r"vision_pairs=1.5 is a share of the steps, in \[0, 1\]"),
        (4, -0.1, r"vision_pairs=-0.1 is a share"),
        (0, 0.5, r"vision_pairs=0.5 needs vision_focus > 0"),
    ],
)
def test_vision_pairs_out_of_range_or_without_focus_is_refused_by_name(focus, pairs, message):
    recipe = LMMRecipe(
        samples=16, vision_steps=1, vision_focus=focus, vision_pairs=pairs, batch_size=8
    )
    with pytest.raises(ValueError, match=message):
        train_vision(build_lmm(recipe), *build_examples(16, 64, 0, pretraining_sources()), recipe)


def test_clip_recipe_loss_falls_in_a_few_steps():
    recipe = CLIPRecipe(samples=64, steps=15, batch_size=16, warmup=2)
    _, losses = train_clip(recipe, log_every=100)
    assert np.mean(losses[-3:]) < losses[0], losses


@pytest.mark.parametrize("folder", [LMM_FOLDER, CLIP_FOLDER])
def test_committed_folders_match_their_recipe(folder):
    path = TRAINED_DIR / folder
    record = json.loads((path / "recipe.json").read_text())
    for name, digest in record["sha256"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest, name
    assert record["final_loss"] < record["first_loss"] / 3
    assert (path / "README.md").read_text().count(record["sha256"]["model.safetensors"]) == 1
    for weights in path.glob("*.safetensors"):
        assert weights.stat().st_size < 20 * 2**20


def test_trained_lmm_loads_and_every_level_word_is_one_token():
    backbone = load_tiny_llava()
    assert backbone.image_size == 64 and backbone.dtype == torch.float32
    for words in (["excellent", "good", "fair", "poor", "bad"], ["good", "fine", "poor", "bad"]):
        for prefix in ("The quality of the image is", ""):
            head = WordScore(words, list(range(len(words))), answer_prefix=prefix)
            head.bind(backbone)  # raises, naming the word, when one is not a single token
    answers = backbone.generate(
        torch.rand(1, 3, 64, 64), ["Which distortions does the image have?"]
    )
    assert answers[0].startswith("It has"), answers


def test_trained_clip_loads_with_its_crop_size():
    encoder = load_tiny_clip()
    assert encoder.image_size == 64
    with pytest.raises(ValueError, match="crops to 64"):
        load_tiny_clip(image_size=32)


def test_missing_folder_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="iqa_lightning.tiny.pretrain --out"):
        trained_folder(str(tmp_path / "nothing"), LMM_FOLDER)
