"""The run folder's plots name the run, give their figures, and show the prompt at input size."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from iqa_lightning.callbacks.plots import prompt_figure, scatter_figure
from iqa_lightning.data import image_to_tensor, load_rgb
from iqa_lightning.models.prompts import NoPrompt, PaddingPrompt
from tests.data.fixtures import write_image

RUN = "demo: prompt=padding prompt.size=4"


def figure_texts(fig):
    texts = [t.get_text() for t in fig.texts]
    if fig._suptitle is not None:
        texts.append(fig._suptitle.get_text())
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return "\n".join(texts)


def test_scatter_title_names_the_run_and_its_srcc_and_plcc():
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 30)
    score = 0.1 * mos + rng.normal(0, 0.1, 30)
    rows = [{"mos_raw": m, "score": s} for m, s in zip(mos, score, strict=True)]
    fig = scatter_figure(rows, RUN)
    title = fig.axes[0].get_title()
    assert RUN in title
    assert f"SRCC {spearmanr(score, mos)[0]:.3f}" in title
    assert f"PLCC {pearsonr(score, mos)[0]:.3f}" in title and "n=30" in title


def test_prompt_figure_shows_a_real_image_with_and_without_the_prompt(tmp_path):
    torch.manual_seed(0)
    prompt = PaddingPrompt(image_size=32, size=4, init_scale=0.5)
    image = image_to_tensor(load_rgb(write_image(tmp_path / "a.png", size=(40, 30))), 32)
    fig = prompt_figure(prompt, image, RUN)
    text = figure_texts(fig)
    assert RUN in fig._suptitle.get_text() and "32x32 px" in fig._suptitle.get_text()
    # Four panels and a colour bar for the signed change.
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4 and len(fig.axes) == 5
    assert "change" in text
    shown = [ax.images[0].get_array() for ax in panels]
    np.testing.assert_allclose(shown[0], image.permute(1, 2, 0).numpy(), atol=1e-6)
    with torch.no_grad():
        prompted = prompt(image[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(shown[1], prompted, atol=1e-6)
    # At the model's input size, pixel for pixel, with a symmetric colour scale.
    for ax in panels:
        assert ax.images[0].get_extent() == [0, 32, 32, 0]
        assert ax.images[0].get_array().shape[:2] == (32, 32)
    low, high = panels[-1].images[0].get_clim()
    assert low == pytest.approx(-high) and high > 0
    # The frame changes, the middle does not.
    change = shown[-1]
    assert np.abs(change[16, 16]) == 0 and np.abs(change[0]).max() > 0


def test_a_prompt_with_nothing_to_show_gives_no_figure():
    assert prompt_figure(NoPrompt(32), None, RUN) is None
