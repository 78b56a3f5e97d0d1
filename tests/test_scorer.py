"""The Python scoring API in this process: presets, PIL images and files, batches, bad images,
the resize the datasets use, and the defaults the scoring CLI composes."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from iqa_lightning.cli import ConfigError
from iqa_lightning.data import ImageLoadError
from iqa_lightning.data.images import array_to_tensor, resize_to_array
from iqa_lightning.scorer import ImageInputs, Scorer, compose_scoring
from iqa_lightning.train import CONFIG_DIR


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api_images")
    rng = np.random.default_rng(3)
    paths = []
    for i, size in enumerate([(40, 30), (30, 70), (64, 64), (90, 20)]):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def qalign():
    return Scorer.from_config(model="tiny_llava", score="qalign", accelerator="cpu")


def test_files_and_pil_images_score_alike_in_the_head_range_whatever_the_batch(qalign, images):
    from_files = qalign(images)
    assert from_files.dtype == torch.float32 and from_files.shape == (4,)
    assert ((from_files >= 0) & (from_files <= 1)).all()  # qalign weights 1 .. 0
    pil = [Image.open(p).convert("RGB") for p in images]
    assert torch.equal(qalign(pil), from_files)
    one_by_one = Scorer(qalign.module, qalign.image_size, batch_size=1, trainer=qalign.trainer)
    assert torch.allclose(one_by_one(images), from_files, atol=1e-6)
    assert torch.equal(qalign(images[0]), from_files[:1])


def test_scores_are_the_modules_forward_on_the_dataset_pixels(qalign, images):
    pixels = torch.stack(
        [array_to_tensor(resize_to_array(Image.open(p), qalign.image_size)) for p in images]
    )
    with torch.no_grad():
        expected = qalign.module(pixels)
    assert torch.allclose(qalign(images), expected, atol=1e-6)
    cropped = Scorer(qalign.module, qalign.image_size, resize="short_side_crop",
                     trainer=qalign.trainer)(images)  # fmt: skip
    assert not torch.allclose(cropped[:2], expected[:2]), "non-square images are cropped"
    assert torch.allclose(cropped[2], expected[2], atol=1e-6), "a square one is only resized"


def test_unreadable_images_raise_naming_them_or_are_listed(qalign, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageLoadError, match=r"1 of 3 image\(s\) cannot be read: '.*broken\.png'"):
        qalign([images[0], broken, images[1]])
    result = qalign.score([images[0], broken, images[1]], mos=[1.0, 2.0, 3.0])
    assert result.images == [str(images[0]), str(images[1])] and result.mos == [1.0, 3.0]
    assert [name for name, _ in result.skipped] == [str(broken)]
    assert torch.allclose(result.scores, qalign(images[:2]), atol=1e-6)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="model/no_such_model"):
        Scorer.from_config(model="no_such_model")
    with pytest.raises(ConfigError, match="batch_size=0"):
        Scorer(torch.nn.Identity(), 64, batch_size=0)
    with pytest.raises(ConfigError, match="resize='stretch'"):
        Scorer(torch.nn.Identity(), 64, resize="stretch")
    with pytest.raises(ValueError, match="2 mos for 1 images"):
        ImageInputs(["a.png"], 64, mos=[1.0, 2.0])


def test_zero_shot_defaults_are_the_training_presets_without_a_prompt():
    from hydra import compose, initialize_config_dir

    cfg = compose_scoring([])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        train = compose(config_name="train")
    assert cfg.model == train.model and cfg.score == train.score
    assert cfg.prompt._target_.endswith("NoPrompt")
    assert OmegaConf.is_missing(cfg, "images") and cfg.run is None
