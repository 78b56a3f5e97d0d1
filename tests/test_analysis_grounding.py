"""Grounding (analysis=grounding), the wording rules and the contradiction rate of described
runs' instability."""

import json

import pytest
import torch

from iqa_lightning.analysis import grounding, instability
from iqa_lightning.analysis.wording import FeatureMentions, polarity
from iqa_lightning.data.instruct.descriptions import synthetic_description
from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.perception import DescriptionScorer, SyntheticDescriptions
from tests.test_analyze import WEIGHTS, WORDS


def test_ols_r2_is_one_for_a_linear_function_and_near_zero_for_noise():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (40, 4), generator=gen)
    x[:, 3] = 1  # mentioned by every description: left out, weight None
    y = 0.3 + 2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2]
    fit = grounding.ols(x, y)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12) and fit.intercept == pytest.approx(0.3)
    assert fit.weights[:3] == pytest.approx([2.0, -1.0, 0.5]) and fit.weights[3] is None
    assert fit.rank == 4
    noise = torch.randn(400, generator=gen)
    x = torch.randint(0, 2, (400, 4), generator=gen)
    assert 0 <= grounding.ols(x, noise).r2 < 0.05
    assert grounding.ols(x, torch.ones(400)).r2 is None, "constant scores: R^2 undefined"


def test_mentions_and_polarity_of_the_synthetic_descriptions():
    mentions = FeatureMentions()
    pristine = synthetic_description("I01.png", 5)
    assert mentions(pristine) == [0] * 6 and polarity(pristine) == 1
    strong_blur = synthetic_description("I01_01_05.png", 5)
    assert mentions(strong_blur) == [1, 0, 0, 0, 0, 0] and polarity(strong_blur) == -1
    assert polarity(synthetic_description("I01_01_01.png", 5)) == 0, "very slight: mild"
    assert mentions(synthetic_description("I02_03_04.png", 5))[5] == 1  # JPEG
    assert mentions("Sharp, with no noise and no blur.") == [0] * 6
    with pytest.raises(ValueError, match="analysis.features.blur"):
        FeatureMentions({"blur": ["(unclosed"]})


def test_grounding_of_given_descriptions_recovers_a_feature_driven_score():
    ids = [f"I{r:02d}_{t:02d}_{lv:02d}.png" for r in (1, 2) for t in (1, 2, 3) for lv in (1, 5)]
    ids[-2:] = ["I01.png", "I02.png"]  # pristine ones: the indicators are not collinear
    texts = SyntheticDescriptions(5).many(ids)
    mentions = FeatureMentions()
    flags = torch.tensor([mentions(t) for t in texts], dtype=torch.float64)
    scores = 0.9 - 0.4 * flags[:, 0] - 0.2 * flags[:, 1]
    result = grounding.from_texts(ids, scores, texts, mentions, "given")
    s = result.summary()
    assert s["r2"] == pytest.approx(1.0) and s["weight_blur"] == pytest.approx(-0.4)
    assert s["weight_exposure"] is None and "exposure" in s["constant"]
    shuffled = grounding.from_texts(ids, scores[torch.tensor([0, 5, 2, 9, 4, 1, 6, 11, 8, 3,
                                                              10, 7])], texts, mentions, "given")  # fmt: skip
    assert shuffled.summary()["r2"] < 0.9


def test_a_described_run_contradiction_rate(tmp_path):
    torch.manual_seed(0)
    backbone = build_tiny_llava()
    scorer = DescriptionScorer(backbone, NoPrompt(), WordScore(WORDS, WEIGHTS),
                               SyntheticDescriptions(5), max_new_tokens=6)  # fmt: skip
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    options = {"samples": 2, "temperature": 1.0, "seed": 0}
    scorer.max_new_tokens = 3
    out = instability.compute(scorer, pixels, options)
    assert out["level_logits"].shape == (2, 2, 5) and len(out["descriptions"][0]) == 2
    summarised = instability.summarise([{**out, "image_id": ["a", "b"]}], scorer, options)
    assert torch.equal(summarised.levels, out["level_logits"].argmax(-1))
    # the rule itself, on chosen texts: negative text + positive level contradicts
    result = instability.Instability(
        WORDS,
        WEIGHTS,
        ["a", "b"],
        torch.tensor([[0, 2, 4], [0, 4, 4]]),
        instability.Sampling(samples=3),
        [["Strong blur and noise."] * 3, ["Sharp and clean."] * 3],
    )
    assert result.contradicts.tolist() == [[True, False, False], [False, True, True]]
    instability.write(result, tmp_path)
    summary = json.loads((tmp_path / "instability.json").read_text())
    assert summary["contradiction_rate"] == pytest.approx(3 / 6) and summary["described"]
    assert (tmp_path / instability.ANSWERS).read_text().count("\n") == 7
    greedy = instability.compute(scorer, pixels, {**options, "temperature": 0.0})
    assert all(len(set(row)) == 1 for row in greedy["descriptions"])


def figure_texts(fig) -> str:
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_grounding_plot_says_in_words_when_every_feature_is_constant(tmp_path, caplog):
    ids = ["I01.png", "I02.png", "I03.png"]
    texts = ["Sharp and clean, with strong blur."] * 3  # blur always, the rest never
    result = grounding.from_texts(ids, torch.tensor([0.2, 0.5, 0.9]), texts, FeatureMentions(),
                                  "given")  # fmt: skip
    assert all(w is None for w in result.fit.weights)
    with caplog.at_level("WARNING", logger="iqa_lightning.analysis.grounding"):
        grounding.write(result, tmp_path)
    words = " ".join(figure_texts(grounding.bars(result)).split())
    assert "nothing to show" in words and "No feature varies across the 3 images" in words
    assert "every description mentions blur" in words and "no description mentions noise" in words
    assert any("nothing to show" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "grounding.png").stat().st_size > 0
    # with a varying feature the bars are drawn and nothing is logged
    caplog.clear()
    texts[0] = "Sharp and clean."
    varied = grounding.from_texts(ids, torch.tensor([0.2, 0.5, 0.9]), texts, FeatureMentions(),
                                  "given")  # fmt: skip
    grounding.write(varied, tmp_path)
    assert "nothing to show" not in figure_texts(grounding.bars(varied)) and not caplog.records


def test_instability_plot_states_the_contradiction_rate():
    described = instability.Instability(
        WORDS, WEIGHTS, ["a", "b"], torch.tensor([[0, 2, 4], [0, 4, 4]]),
        instability.Sampling(samples=3),
        [["Strong blur and noise."] * 3, ["Sharp and clean."] * 3],
    )  # fmt: skip
    assert "contradiction rate 0.500 (3 of 6 answers)" in figure_texts(
        instability.histogram(described)
    )
    plain = instability.Instability(WORDS, WEIGHTS, ["a"], torch.tensor([[0, 1]]),
                                    instability.Sampling(samples=2))  # fmt: skip
    assert "contradiction rate: none" in figure_texts(instability.histogram(plain))
