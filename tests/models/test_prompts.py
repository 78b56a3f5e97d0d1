import pytest
import torch

from iqa_lightning.models.prompts import NoPrompt, OverlayPrompt, PaddingPrompt, PatchPrompt

R = 32


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", [1, 5, 15])
def test_padding_parameter_count_and_frame(size):
    prompt = PaddingPrompt(R, size=size, init_scale=1.0)
    assert count(prompt) == 3 * (R**2 - (R - 2 * size) ** 2)
    canvas = prompt.canvas()
    assert canvas.shape == (3, R, R)
    inner = canvas[:, size : R - size, size : R - size]
    assert torch.count_nonzero(inner) == 0
    # Every frame pixel holds a parameter (nonzero with probability 1 under a normal init).
    assert torch.count_nonzero(canvas) == count(prompt)


@pytest.mark.parametrize("position,corner", [("center", (11, 11)), ("topleft", (0, 0))])
def test_patch_position_and_count(position, corner):
    prompt = PatchPrompt(R, size=10, position=position, init_scale=1.0)
    assert count(prompt) == 3 * 10**2
    canvas = prompt.canvas()
    top, left = corner
    assert torch.count_nonzero(canvas) == 300
    assert torch.count_nonzero(canvas[:, top : top + 10, left : left + 10]) == 300


def test_overlay_count():
    assert count(OverlayPrompt(R, init_scale=1.0)) == 3 * R * R


@pytest.mark.parametrize(
    "prompt",
    [
        PaddingPrompt(R, size=4, init_scale=3.0, delta=2.0),
        PatchPrompt(R, size=8, init_scale=3.0, delta=2.0, mode="mul"),
        OverlayPrompt(R, init_scale=3.0, delta=2.0),
        OverlayPrompt(R, init_scale=3.0, delta=2.0, mode="mul"),
    ],
)
def test_output_shape_and_range(prompt):
    x = torch.rand(5, 3, R, R)
    y = prompt(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)


@pytest.mark.parametrize("mode", ["add", "mul"])
def test_pixels_outside_the_prompt_are_untouched(mode):
    prompt = PaddingPrompt(R, size=4, mode=mode, init_scale=2.0)
    x = torch.rand(2, 3, R, R)
    y = prompt(x)
    assert torch.equal(y[..., 4:-4, 4:-4], x[..., 4:-4, 4:-4])
    assert not torch.equal(y[..., :4, :], x[..., :4, :])


def test_mul_prompt_scales_rather_than_blacks_out():
    prompt = PatchPrompt(R, size=8, mode="mul", delta=0.5, init_scale=0.0)
    with torch.no_grad():
        prompt.patch.fill_(10.0)  # tanh -> 1: factor 1.5 inside the patch
    x = torch.full((1, 3, R, R), 0.4)
    y = prompt(x)
    inside = y[..., 12:20, 12:20]
    assert torch.allclose(inside, torch.full_like(inside, 0.6), atol=1e-4)
    assert torch.equal(y[..., :12, :], x[..., :12, :])


def test_gradient_reaches_only_prompt_parameters():
    prompt = PaddingPrompt(R, size=4, init_scale=0.1)
    x = torch.rand(2, 3, R, R, requires_grad=False)
    prompt(x).mean().backward()
    for p in prompt.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_none_prompt_is_identity_without_parameters():
    x = torch.rand(2, 3, R, R)
    prompt = NoPrompt(R)
    assert prompt(x) is x and count(prompt) == 0


@pytest.mark.parametrize(
    "build,key",
    [
        (lambda: PaddingPrompt(R, size=16), "prompt.size"),
        (lambda: PatchPrompt(R, size=40), "prompt.size"),
        (lambda: PatchPrompt(R, size=4, position="middle"), "prompt.position"),
        (lambda: OverlayPrompt(R, mode="sub"), "prompt.mode"),
        (lambda: OverlayPrompt(R, delta=0), "prompt.delta"),
    ],
)
def test_bad_config_values_name_the_key(build, key):
    with pytest.raises(ValueError, match=key):
        build()


def test_wrong_image_size_is_reported():
    with pytest.raises(ValueError, match="prompt.image_size"):
        PaddingPrompt(R, size=2)(torch.rand(1, 3, R + 1, R + 1))
