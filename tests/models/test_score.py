import math

import pytest
import torch

from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.score import WordScore


class FakeBackbone:
    """Maps each word to a fixed token id, as a tokenizer would."""

    family = "fake"

    def __init__(self, ids):
        self.ids = ids

    def answer_token_id(self, prefix, word):
        return self.ids[word]


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_qalign_score_matches_hand_computation():
    words = ["excellent", "good", "fair", "poor", "bad"]
    head = WordScore(words, [1, 0.75, 0.5, 0.25, 0]).bind(
        FakeBackbone({w: i for i, w in enumerate(words)})
    )
    logits = torch.full((2, 10), -5.0)
    logits[0, :5] = torch.tensor([2.0, 1.0, 0.0, -1.0, -2.0])
    logits[1, :5] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])
    logits[:, 7] = 50.0  # a word outside the set must not matter
    p = softmax([2.0, 1.0, 0.0, -1.0, -2.0])
    expected0 = sum(pi * w for pi, w in zip(p, [1, 0.75, 0.5, 0.25, 0], strict=True))
    scores = head(logits)
    assert scores.dtype == torch.float32
    assert scores[0].item() == pytest.approx(expected0, abs=1e-6)
    assert scores[1].item() == pytest.approx(0.5, abs=1e-6)


def test_grouped_score_is_probability_of_positive_group():
    ids = {"good": 3, "fine": 4, "poor": 5, "bad": 6}
    head = WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]).bind(FakeBackbone(ids))
    logits = torch.zeros(1, 8)
    logits[0, 3:7] = torch.tensor([1.0, 0.5, -0.5, 2.0])
    p = softmax([1.0, 0.5, -0.5, 2.0])
    assert head(logits).item() == pytest.approx(p[0] + p[1], abs=1e-6)


def test_fp16_logits_that_overflow_exp_stay_finite():
    head = WordScore(["good", "bad"], [1, 0]).bind(FakeBackbone({"good": 0, "bad": 1}))
    logits = torch.tensor([[20.0, 10.0]], dtype=torch.float16)
    assert torch.isinf(logits.exp()).any()  # the reference code's fp16 exp
    score = head(logits)
    assert torch.isfinite(score).all()
    assert score.item() == pytest.approx(1 / (1 + math.exp(-10)), abs=1e-4)


def test_real_tokenizer_lookup_and_unknown_word_is_named():
    backbone = build_tiny_llava()
    head = WordScore(["good", "poor"], [1, 0]).bind(backbone)
    tok = backbone.tokenizer
    tokens = tok.convert_ids_to_tokens(head.token_ids.tolist())
    # The leading-space form of each word: "Ġ" for byte-level BPE, "▁" for SentencePiece.
    assert [t[0] for t in tokens] in (["Ġ", "Ġ"], ["▁", "▁"])
    assert [t[1:] for t in tokens] == ["good", "poor"]
    with pytest.raises(ValueError, match="'mediocre'"):
        WordScore(["good", "mediocre"], [1, 0]).bind(backbone)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="score.weights"):
        WordScore(["good", "bad"], [1.0])
    with pytest.raises(RuntimeError, match="bind"):
        WordScore(["good", "bad"], [1, 0])(torch.zeros(1, 4))


def test_duplicate_word_is_named_before_the_length_check():
    # score.words=[good,good] with a preset's four weights: the duplicate is the real mistake.
    with pytest.raises(ValueError, match=r"score\.words.*'good' appears more than once"):
        WordScore(["good", "good"], [1, 1, 0, 0])
    with pytest.raises(ValueError, match=r"'poor' appears more than once"):
        WordScore(["good", "poor", "bad", "poor"], [1, 0, 0, 0])
    with pytest.raises(ValueError, match="at least 2"):
        WordScore(["good"], [1])
