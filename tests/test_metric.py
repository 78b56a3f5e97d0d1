"""The metric API (``iqa_lightning.create_metric``) on the tiny models: scores equal the
Scorer's on the same images (tensors and files), ``as_loss`` gives finite nonzero gradients at
the pixels (LMM word scores and RALI), ranges and direction, and a clear error for a bad name."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iqa_lightning
from iqa_lightning.errors import ConfigError
from iqa_lightning.metric import resize_tensor
from iqa_lightning.scorer import Scorer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RALI = FIXTURES / "rali_tiny"


@pytest.fixture(scope="module")
def pictures():
    """Four 64 x 64 RGB images (the tiny models' input size: no resize on either path)."""
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]


def as_tensor(images):
    return torch.stack(
        [torch.from_numpy(np.array(i)).permute(2, 0, 1).float() / 255 for i in images]
    )


def test_a_preset_scores_tensors_and_files_as_its_scorer_with_gradients_as_a_loss(pictures):
    metric = iqa_lightning.create_metric(
        "tiny_llava", device="cpu", accelerator="cpu", batch_size=3
    )
    assert metric.lower_better is False and metric.score_range == (0.0, 1.0)
    assert isinstance(metric.scorer, Scorer) and metric.scorer.batch_size == 3
    reference = metric.scorer(pictures)  # the Scorer's own path: PIL decode, resize, Trainer
    torch.testing.assert_close(metric(as_tensor(pictures)), reference, atol=1e-5, rtol=0)

    metric.as_loss = True
    pixels = as_tensor(pictures[:2]).requires_grad_(True)
    scores = metric(pixels)
    torch.testing.assert_close(scores.detach(), reference[:2], atol=1e-5, rtol=0)
    (-scores.mean()).backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in metric.module.parameters())  # the model stays frozen


def test_a_rali_scorer_folder_is_a_differentiable_metric(pictures):
    pictures = [p.resize((32, 32), Image.BICUBIC) for p in pictures]  # the tiny CLIP's input size
    metric = iqa_lightning.create_metric(RALI, as_loss=True, device="cpu",
                                         accelerator="cpu")  # fmt: skip
    reference = Scorer.from_rali(RALI, accelerator="cpu")(pictures)
    assert metric.score_range == tuple(metric.module.scorer.rali.score_range)
    pixels = as_tensor(pictures).requires_grad_(True)
    scores = metric(pixels)
    torch.testing.assert_close(scores.detach(), reference, atol=1e-5, rtol=0)
    scores.sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def test_bad_names_list_the_options(tmp_path):
    with pytest.raises(ConfigError, match=r"did you mean one_align\?.*model preset \(.*deqa_score"):
        iqa_lightning.create_metric("one_alig")
    with pytest.raises(
        ConfigError, match=r"the folder holds neither a run \(\.hydra/config\.yaml\)"
    ):
        iqa_lightning.create_metric(tmp_path)
    with pytest.raises(ValueError, match=r"expected \[B, 3, H, W\] pixels, got \[2, 64, 64\]"):
        iqa_lightning.create_metric("tiny_llava", device="cpu")(torch.rand(2, 64, 64))


def test_tensors_of_another_size_are_resized_as_the_model_declares():
    pixels = torch.rand(2, 3, 40, 80, requires_grad=True)
    fill = torch.tensor([0.2, 0.4, 0.6])
    padded = resize_tensor(pixels, 64, "pad_square", fill)
    assert padded.shape == (2, 3, 64, 64)
    torch.testing.assert_close(padded[0, :, 0, 32], fill, atol=1e-3, rtol=0)  # the fill band
    cropped = resize_tensor(pixels, 32, "short_side_crop", fill)
    assert (
        cropped.shape == (2, 3, 32, 32)
        and resize_tensor(pixels, 64, "squash", fill).shape[-1] == 64
    )
    cropped.sum().backward()
    assert pixels.grad[..., :, :10].abs().sum() == 0 < pixels.grad[..., :, 30:50].abs().sum()


def test_a_run_folder_is_a_metric_of_its_tuned_model():
    run = FIXTURES / "runs" / "stage2"  # a padding prompt tuned on the random tiny LLaVA
    want = json.loads((run / "expected_scores.json").read_text())  # Scorer.from_run's scores
    metric = iqa_lightning.create_metric(run, device="cpu", accelerator="cpu")
    assert metric.module.prompt is not None and metric.score_range == (0.0, 1.0)
    scores = metric([FIXTURES / "runs" / "images" / name for name in want["images"]])
    torch.testing.assert_close(scores, torch.tensor(want["scores"]), atol=1e-5, rtol=0)
