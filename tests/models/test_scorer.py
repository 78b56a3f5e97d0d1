"""The scorer protocol and the LMM word scorer the module scores through."""

from functools import partial

import torch

from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import PaddingPrompt, QAdaptPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer, QualityScorer
from iqa_lightning.module import IQAModule

QADAPT = partial(QAdaptPrompt, num_queries=4, hidden_size=32, num_layers=1, num_heads=4)


def module(prompt=None, lora=None):
    backbone = build_tiny_llava()
    return IQAModule(
        backbone,
        prompt if prompt is not None else PaddingPrompt(64, size=8, init_scale=0.1),
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=[{"name": "a", "trainable": ["prompt"], "optimizer": torch.optim.SGD}],
        lora=lora,
    )


def test_the_module_scores_through_its_scorer():
    m = module().eval()
    assert isinstance(m.scorer, LMMWordScorer) and isinstance(m.scorer, QualityScorer)
    assert m.scorer.tasks == frozenset({"score", "instruct", "mcq"})
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        scores = m(pixels)
        distribution = m.scorer.distribution(pixels)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    assert distribution.shape == (3, 4)
    torch.testing.assert_close(distribution.sum(-1), torch.ones(3))
    torch.testing.assert_close(scores, distribution @ m.score.weights)


def test_parts_keep_their_names_and_are_the_modules_own():
    m = module(lora={"r": 2, "alpha": 4, "dropout": 0.0})
    assert m.scorer.backbone is m.backbone and m.scorer.prompt is m.prompt
    assert m.scorer.score is m.score and m.prompter is None
    names = set(m.state_dict())
    assert not any(n.startswith("scorer.") for n in names)
    assert {n.split(".")[0] for n in dict(m.named_parameters())} == {"backbone", "prompt"}
    groups = m.parameter_groups()
    assert set(groups) == {"prompt", "lora", "projector"}
    assert set(groups["prompt"]) == {f"prompt.{n}" for n in m.prompt.trainable_parameters()}
    assert all(".lora_" in n for n in groups["lora"])
    assert not set(groups["lora"]) & set(groups["projector"])


def test_a_feature_prompter_is_chosen_by_its_declared_group():
    m = module(prompt=QADAPT)
    assert m.prompter is not None and m.scorer.prompter is m.prompter
    assert set(m.parameter_groups()) == {"prompter", "projector"}
    assert m.trainable_groups == ["prompter"]


def test_explain_answers_one_question_per_image_and_keeps_the_mode():
    m = module().train()
    answers = m.explain(torch.rand(2, 3, 64, 64), ["Describe the quality."] * 2, 4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert m.training


def test_any_scorer_with_the_members_meets_the_protocol():
    class MeanScorer(torch.nn.Module):
        tasks = frozenset({"score"})

        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def forward(self, pixels):
            return pixels.float().mean((1, 2, 3)) + self.bias

        def parameter_groups(self):
            return {"head": {"bias": self.bias}}

    assert isinstance(MeanScorer(), QualityScorer)
    assert MeanScorer()(torch.rand(2, 3, 8, 8)).shape == (2,)
    assert not isinstance(torch.nn.Identity(), QualityScorer)
