"""The offline world of the trained tiny models: its words, its images and its quality law."""

import numpy as np
import pytest

from iqa_lightning.tiny.pretrain import clip_description, pretraining_sources, vocabulary_corpus
from iqa_lightning.tiny.world import (
    DISTORTION_KINDS,
    FORBIDDEN_WORDS,
    GREY,
    HELD_OUT_PHOTOS,
    PATTERNS,
    PHOTOS,
    Scene,
    check_words,
    perception_answers,
    quality,
    random_scene,
    render,
    strength_name,
)


def test_pretraining_text_never_names_a_quality_level():
    rng = np.random.default_rng(0)
    for _ in range(400):
        scene = random_scene(rng, pretraining_sources(), augment=True)
        for question, answer in perception_answers(scene, rng):
            check_words(question + " " + answer)
        check_words(clip_description(scene))
    for line in vocabulary_corpus():
        check_words(line)


def test_check_words_refuses_level_words():
    for text in ("The image is good.", "Quality: Poor", "a FAIR picture", "high noise"):
        with pytest.raises(ValueError, match="quality word"):
            check_words(text)
    assert {"excellent", "good", "fair", "poor", "bad", "fine"} <= FORBIDDEN_WORDS


def test_held_out_photographs_are_never_pretraining_sources():
    sources = set(pretraining_sources())
    assert not sources & set(HELD_OUT_PHOTOS)
    assert set(HELD_OUT_PHOTOS) <= set(PHOTOS)
    assert set(PATTERNS) <= sources


def test_render_is_deterministic_and_distortions_change_pixels():
    clean = Scene("astronaut", (0.2, 0.3, 0.6), False, (), seed=5)
    a, b = np.asarray(render(clean, 64)), np.asarray(render(clean, 64))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    for kind in DISTORTION_KINDS:
        distorted = Scene("astronaut", (0.2, 0.3, 0.6), False, ((kind.name, 0.8),), seed=5)
        diff = np.abs(np.asarray(render(distorted, 64), np.int16) - a).mean()
        assert diff > 1.0, kind.name


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_every_photograph_renders_offline(name):
    """Each source ships with a dependency (scikit-image, matplotlib): none downloads."""
    image = np.asarray(render(Scene(name, (0.5, 0.5, 1.0), False, (), seed=0), 64))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 5, name  # a photograph, not a blank
    spread = np.abs(image[..., 0].astype(int) - image[..., 2]).mean()
    assert (spread < 1) == (name in GREY), name  # GREY names exactly the grey ones


def test_colour_distortions_are_not_drawn_for_grey_photographs():
    rng = np.random.default_rng(1)
    colour_only = {k.name for k in DISTORTION_KINDS if k.colour}
    for _ in range(300):
        scene = random_scene(rng, sorted(GREY))
        assert not colour_only & {name for name, _ in scene.distortions}


@pytest.mark.parametrize("kind", [k.name for k in DISTORTION_KINDS])
def test_quality_falls_with_each_strength_and_stays_in_range(kind):
    values = [quality([(kind, t)]) for t in (0.0, 0.2, 0.5, 0.8, 1.0)]
    assert values[0] == 5.0
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert 1.0 <= min(values)


def test_quality_is_not_one_knob():
    # Same strength, different kinds: different quality; two distortions multiply.
    blur, saturation = quality([("blur", 0.6)]), quality([("saturation", 0.6)])
    assert blur < saturation - 0.5
    both = quality([("blur", 0.6), ("noise", 0.6)])
    keep = ((blur - 1) / 4) * ((quality([("noise", 0.6)]) - 1) / 4)
    assert both == pytest.approx(1 + 4 * keep)


def test_strength_names_cover_the_range():
    assert [strength_name(t) for t in (0.1, 0.3, 0.6, 0.9, 1.0)] == [
        "slight", "moderate", "strong", "severe", "severe"
    ]  # fmt: skip
