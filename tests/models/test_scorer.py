"""The scorer base class and the LMM word scorer the module scores through."""

from functools import partial

import pytest
import torch

from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import PaddingPrompt, QAdaptPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer, QualityScorer, ScoreOutput
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


def test_the_scorer_is_a_child_module_and_saved_names_are_its_own():
    m = module(lora={"r": 2, "alpha": 4, "dropout": 0.0})
    assert m.scorer.backbone is m.backbone and m.scorer.prompt is m.prompt
    assert m.scorer.head is m.score and m.prompter is None
    assert dict(m.named_children())["scorer"] is m.scorer
    assert {n.split(".")[0] for n in dict(m.named_parameters())} == {"scorer"}
    assert set(m.tuned_state_dict()) <= set(dict(m.scorer.named_parameters()))
    # A checkpoint holds the tuned tensors by the scorer's names (as files written before the
    # scorer was a child module), and loads back into this module.
    checkpoint = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(m.tuned_state_dict())
    assert any(n.startswith("backbone.") and ".lora_" in n for n in checkpoint["state_dict"])
    m.on_load_checkpoint(checkpoint)
    result = m.load_state_dict(checkpoint["state_dict"], strict=False)
    assert not result.unexpected_keys
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


def test_a_scorer_implements_score_and_its_groups_and_trains_in_the_module():
    class Incomplete(QualityScorer):
        def parameter_groups(self):
            return {}

    with pytest.raises(TypeError, match="score"):
        Incomplete()

    class MeanScorer(QualityScorer):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def score(self, batch):
            return ScoreOutput(batch["pixels"].float().mean((1, 2, 3)) + self.bias)

        def parameter_groups(self):
            return {"head": {"bias": self.bias}}

    scorer = MeanScorer()
    assert scorer(torch.rand(2, 3, 8, 8)).shape == (2,) and scorer.word_head is None
    m = IQAModule(None, None, None, scorer=scorer,
                  phases=[{"name": "a", "trainable": ["head"], "optimizer": torch.optim.SGD}])
    assert m.trainable_groups == ["head"] and m.scorer is scorer
    batch = {"pixels": torch.rand(2, 3, 8, 8), "target": torch.tensor([0.2, 0.8])}
    loss = m.training_step(batch, 0)
    loss.backward()
    assert scorer.bias.grad is not None
    with pytest.raises(ValueError, match="level_ce.*reads no words"):
        IQAModule(None, None, None, scorer=MeanScorer(), loss="level_ce",
                  phases=[{"name": "a", "trainable": ["head"], "optimizer": torch.optim.SGD}])


def test_a_scorers_extras_reach_the_prediction_rows_and_columns():
    from iqa_lightning.callbacks.predictions import COLUMNS, prediction_columns

    class Answering(QualityScorer):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def score(self, batch):
            n = batch["pixels"].shape[0]
            return ScoreOutput(torch.zeros(n) + self.bias, extras={
                "answer": [f"<answer>{i}</answer>" for i in range(n)],
                "parsed": [i % 2 == 0 for i in range(n)],
                "description": ["sharp"] * n,
            })

        def parameter_groups(self):
            return {"head": {"bias": self.bias}}

    m = IQAModule(None, None, None, scorer=Answering(),
                  phases=[{"name": "a", "trainable": ["head"], "optimizer": torch.optim.SGD}])
    batch = {"pixels": torch.rand(2, 3, 8, 8), "target": torch.tensor([0.2, 0.8]),
             "mos_raw": torch.tensor([2.0, 4.0]), "image_id": ["a", "b"]}
    rows = m.prediction_rows(batch, m.scorer.score(batch))
    assert [r["parsed"] for r in rows] == [True, False] and rows[1]["answer"] == "<answer>1</answer>"
    assert prediction_columns(rows) == [*COLUMNS, "answer", "parsed"]  # description: its own file


def test_the_scoring_loop_keeps_a_scorers_extras_per_image(tmp_path):
    from PIL import Image

    from iqa_lightning.score import write_outputs
    from iqa_lightning.scorer import Scorer

    class Worded(QualityScorer):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def score(self, batch):
            means = batch["pixels"].float().mean((1, 2, 3))
            return ScoreOutput(means + self.bias, extras={
                "answer": [f"<answer>{m:.2f}</answer>" for m in means.tolist()],
                "parse_ok": [m > 0.5 for m in means.tolist()],
            })

        def parameter_groups(self):
            return {"head": {"bias": self.bias}}

    m = IQAModule(None, None, None, scorer=Worded(),
                  phases=[{"name": "a", "trainable": []}]).eval()
    images = [Image.new("RGB", (16, 16), (v, v, v)) for v in (40, 200, 120)]
    result = Scorer(m, 16).score(images, names=["dark", "light", "mid"])
    assert result.images == ["dark", "light", "mid"]
    assert result.extras["parse_ok"] == [False, True, False]
    assert result.extras["answer"][1] == f"<answer>{result.scores[1].item():.2f}</answer>"
    write_outputs(tmp_path / "scores.csv", result, None)
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "image,score,answer,parse_ok" and lines[2].endswith(",True")
