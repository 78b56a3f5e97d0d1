"""Rewards of GRPO on quality answers, as configurable objects.

A reward reads one group of ``G`` answers per image of a batch (image-major: image 0's answers
first) and gives one value per answer. Each gets the :class:`Answers` of a rollout: the texts,
the parsed scores (failures filled by the parser's ``failure`` rule, what the authors' code
does with them), whether each parsed, and the batch's MOS on the answers' scale.

- :class:`ThresholdReward` (Q-Insight's score reward): 1 where the parsed score is within
  ``threshold`` of the MOS, else 0 (an answer that did not parse: 0);
- :class:`FormatReward`: 1 where the whole text matches a pattern (Q-Insight's and
  VisualQuality-R1's format rewards are two patterns);
- :class:`RankingReward` (VisualQuality-R1's fidelity reward): for each answer, the mean over
  the batch's other images of the fidelity between the probability, under a Gaussian of the
  two groups' variances, that this answer ranks above the other image's mean answer and
  whether its MOS does.

:func:`total_reward` weights and sums them; :func:`group_advantages` normalises each group.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from iqa_lightning.errors import ConfigError


@dataclass
class Answers:
    """A rollout's answers, ``B * G`` of them, image-major.

    Attributes:
        texts: The generated texts.
        scores: ``[B * G]`` parsed scores (a failure filled by the parser's rule).
        parsed: ``[B * G]`` bool, whether each answer parsed.
        mos: ``[B]`` each image's MOS on the answers' scale.
        group: ``G``, answers per image.
    """

    texts: list[str]
    scores: torch.Tensor
    parsed: torch.Tensor
    mos: torch.Tensor
    group: int

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.mos) * self.group or len(self.scores) != len(self.texts):
            raise ValueError(
                f"{len(self.texts)} answers, {len(self.scores)} scores for {len(self.mos)} "
                f"images of {self.group} answers each"
            )


class Reward(abc.ABC):
    """One reward term; ``weight`` scales it in :func:`total_reward`."""

    name: str = "reward"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = float(weight)

    @abc.abstractmethod
    def __call__(self, answers: Answers) -> torch.Tensor:
        """``[B * G]`` fp32 rewards."""


class ThresholdReward(Reward):
    """1 where ``|score - MOS| < threshold`` and the answer parsed, else 0 (Q-Insight).

    Args:
        threshold: The tolerance on the answers' scale (Q-Insight: 0.35 on 1-5).
        weight: Its weight.
    """

    name = "accuracy"

    def __init__(self, threshold: float = 0.35, weight: float = 1.0) -> None:
        super().__init__(weight)
        if float(threshold) <= 0:
            raise ConfigError(f"reward threshold={threshold} must be > 0")
        self.threshold = float(threshold)

    def __call__(self, answers: Answers) -> torch.Tensor:
        mos = answers.mos.float().repeat_interleave(answers.group)
        close = (answers.scores.float() - mos).abs() < self.threshold
        return (close & answers.parsed.bool()).float()


class FormatReward(Reward):
    """1 where the whole text matches ``pattern`` (``re.fullmatch``, DOTALL; ``multiline``
    adds MULTILINE), else 0.

    Args:
        pattern: The answer format (e.g. ``<think>.*?</think>\\s*<answer>.*?</answer>``).
        multiline: Also MULTILINE (Q-Insight's pattern anchors lines).
        weight: Its weight.
    """

    name = "format"

    def __init__(self, pattern: str, multiline: bool = False, weight: float = 1.0) -> None:
        super().__init__(weight)
        try:
            self.pattern = re.compile(pattern, re.DOTALL | (re.MULTILINE if multiline else 0))
        except re.error as err:
            raise ConfigError(f"format reward pattern {pattern!r}: {err}") from None

    def __call__(self, answers: Answers) -> torch.Tensor:
        return torch.tensor(
            [1.0 if self.pattern.fullmatch(t) else 0.0 for t in answers.texts],
            dtype=torch.float32,
            device=answers.scores.device,
        )


class RankingReward(Reward):
    """VisualQuality-R1's fidelity reward over the images of a batch.

    For answer ``j`` of image ``i`` and each other image ``z``:
    ``p = Phi((s_ij - mean_z) / sqrt(var_i + var_z + eps))`` (variances of each image's ``G``
    scores, unbiased), ``gt = 1, 0, 0.5`` as ``MOS_i >, <, = MOS_z`` and the fidelity
    ``sqrt(p * gt + eps) + sqrt((1 - p) * (1 - gt) + eps)``; the reward is its mean over ``z``.

    Args:
        eps: The ``1e-6`` inside the square roots and the variance sum.
        weight: Its weight.
    """

    name = "ranking"

    def __init__(self, eps: float = 1e-6, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.eps = float(eps)

    def __call__(self, answers: Answers) -> torch.Tensor:
        b, g = len(answers.mos), answers.group
        if b < 2:
            raise ConfigError(
                "the ranking reward compares images of a batch: it needs >= 2 per batch"
            )
        if g < 2:
            raise ConfigError("the ranking reward needs >= 2 answers per image (method.group_size)")
        scores = answers.scores.float().view(b, g)
        mean, var = scores.mean(1), scores.var(1)  # unbiased, as torch.var
        mos = answers.mos.float()
        gt = (mos[:, None] > mos[None]).float() + 0.5 * (mos[:, None] == mos[None]).float()
        normal = torch.distributions.Normal(0.0, 1.0)
        # [i, j, z]: answer j of image i against image z
        p = normal.cdf((scores[:, :, None] - mean[None, None]) /
                       torch.sqrt(var[:, None, None] + var[None, None] + self.eps))  # fmt: skip
        gt = gt[:, None, :]
        fidelity = torch.sqrt(p * gt + self.eps) + torch.sqrt((1 - p) * (1 - gt) + self.eps)
        others = ~torch.eye(b, dtype=torch.bool, device=scores.device)[:, None, :]
        return ((fidelity * others).sum(-1) / (b - 1)).reshape(-1)


REWARDS = {"threshold": ThresholdReward, "format": FormatReward, "ranking": RankingReward}


def make_rewards(specs: Sequence[dict] | None) -> list[Reward]:
    """Reward objects from config entries ``{type: threshold|format|ranking, ...}``.

    Raises:
        ConfigError: No reward, or an unknown type (the message lists the known ones).
    """
    if not specs:
        raise ConfigError("method.rewards is empty: GRPO needs at least one reward")
    rewards = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in REWARDS:
            raise ConfigError(f"method.rewards[{i}].type={kind!r} is not one of {sorted(REWARDS)}")
        try:
            rewards.append(REWARDS[kind](**spec))
        except TypeError as err:
            raise ConfigError(f"method.rewards[{i}] ({kind}): {err}") from None
    return rewards


def total_reward(rewards: Sequence[Reward], answers: Answers) -> tuple[torch.Tensor, dict]:
    """``[B * G]`` weighted sum of the rewards, and each term's mean by name."""
    total = torch.zeros(len(answers.texts), dtype=torch.float32, device=answers.scores.device)
    means = {}
    for reward in rewards:
        value = reward(answers)
        total = total + reward.weight * value
        means[reward.name] = float(value.mean())
    return total, means


def group_advantages(rewards: torch.Tensor, group: int, eps: float = 1e-4) -> torch.Tensor:
    """``(r - mean) / (std + eps)`` within each group of ``group`` consecutive rewards
    (unbiased std, as the GRPO trainers of both references)."""
    grouped = rewards.view(-1, group)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True) if group > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std + eps)).reshape(-1)


__all__ = [
    "REWARDS",
    "Answers",
    "FormatReward",
    "RankingReward",
    "Reward",
    "ThresholdReward",
    "group_advantages",
    "make_rewards",
    "total_reward",
]
