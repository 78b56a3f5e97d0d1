"""Score losses as objects: each declares what it needs and computes itself from a
:class:`~iqa_lightning.models.scorer.ScoreOutput` and the batch.

``module.loss`` names one (``mse``, ``l1``, ``smooth_l1``, ``level_ce``, ``soft_label``: the
:data:`LOSSES` table is the one place a name becomes a loss) or is a loss object itself
(``module.loss._target_=...``, a :class:`ScoreLoss` subclass of your own).

- Regression losses (:class:`RegressionLoss`) need the scores and the targets.
- Level losses (:class:`LevelCE`, Q-Align; :class:`SoftLabel`, DeQA-Score) need the next-token
  logits at the answer position and a word head of five level words, best first; they read the
  dataset's score range from the data module at setup (``module.levels.range=observed``) and,
  for the soft label, each image's rating std (or histogram) from the batch.

Adding a loss: a subclass of :class:`ScoreLoss` in a file of its own, and a line in
:data:`LOSSES` for its short name (or give its ``_target_`` in the config).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from iqa_lightning.models.levels import LevelTargets, check_level_words, histogram_labels
from iqa_lightning.models.scorer import QualityScorer, ScoreOutput


class ScoreLoss(abc.ABC):
    """A loss between a scorer's output and a score batch's targets.

    Attributes:
        name: Its ``module.loss`` name.
        needs_logits: It trains the word logits (:attr:`ScoreOutput.logits`), so the scorer
            must give them and have a word head.
    """

    name: ClassVar[str] = ""
    needs_logits: ClassVar[bool] = False

    def check(self, scorer: QualityScorer) -> None:  # noqa: B027 - an optional hook
        """Raise ``ValueError`` when ``scorer`` cannot be trained with this loss."""

    def setup(self, datamodule: Any) -> None:  # noqa: B027 - an optional hook
        """Read what the loss needs of the training data (called at the module's setup)."""

    @abc.abstractmethod
    def __call__(self, output: ScoreOutput, batch: dict[str, Any]) -> torch.Tensor:
        """The scalar loss of a batch."""

    def target_distribution(self, batch: dict[str, Any], levels: int) -> torch.Tensor | None:
        """``[B, levels]`` distribution each image is trained towards (None: not one)."""
        return None


class RegressionLoss(ScoreLoss):
    """An elementwise regression loss between scores and targets (``mse``, ``l1``,
    ``smooth_l1``)."""

    FUNCTIONS: ClassVar[dict[str, Callable[..., torch.Tensor]]] = {
        "mse": F.mse_loss,
        "l1": F.l1_loss,
        "smooth_l1": F.smooth_l1_loss,
    }

    def __init__(self, kind: str = "mse") -> None:
        if kind not in self.FUNCTIONS:
            raise ValueError(f"module.loss={kind!r} must be one of {sorted(LOSSES)}")
        self.name = kind
        self.function = self.FUNCTIONS[kind]

    def __call__(self, output: ScoreOutput, batch: dict[str, Any]) -> torch.Tensor:
        return self.function(output.scores, batch["target"].float())


class LevelLoss(ScoreLoss):
    """A loss on the five level words' log-probabilities (:class:`LevelTargets` for the
    targets; ``module.levels`` its settings)."""

    needs_logits = True

    def __init__(self, **levels: Any) -> None:
        self.levels = LevelTargets(**levels)
        self.token_ids: torch.Tensor | None = None

    def check(self, scorer: QualityScorer) -> None:
        head = scorer.word_head
        if head is None:
            raise ValueError(
                f"module.loss={self.name} trains the level words' logits; "
                f"{type(scorer).__name__} reads no words"
            )
        check_level_words(self.name, head.words, head.weights.tolist(), head.name)
        self.token_ids = head.token_ids

    def setup(self, datamodule: Any) -> None:
        """The dataset's observed target range (``range=observed``), where the data module
        gives one (``target_bounds()``)."""
        datamodule = getattr(datamodule, "score_datamodule", datamodule)
        bounds = getattr(datamodule, "target_bounds", None)
        if bounds is not None:
            self.levels.set_bounds(bounds())

    def log_probs(self, output: ScoreOutput) -> torch.Tensor:
        if output.logits is None or self.token_ids is None:
            raise ValueError(f"module.loss={self.name} needs the scorer's word logits")
        return self.levels.log_probs(output.logits, self.token_ids.to(output.logits.device))

    def __call__(self, output: ScoreOutput, batch: dict[str, Any]) -> torch.Tensor:
        with torch.autocast(output.logits.device.type, enabled=False):
            return self.from_log_probs(self.log_probs(output), batch)

    @abc.abstractmethod
    def from_log_probs(self, log_probs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The loss of ``[B, 5]`` fp32 level log-probabilities."""


class LevelCE(LevelLoss):
    """Q-Align: cross-entropy on each image's level word."""

    name = "level_ce"

    def from_log_probs(self, log_probs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        target = self.levels.level_index(batch["target"]).to(log_probs.device)
        return F.nll_loss(log_probs, target)

    def target_distribution(self, batch: dict[str, Any], levels: int) -> torch.Tensor | None:
        if not self.levels.ready:
            return None
        return F.one_hot(self.levels.level_index(batch["target"]), levels).double()


class SoftLabel(LevelLoss):
    """DeQA-Score: ``KL(label || predicted)`` to each image's level distribution, averaged over
    the batch."""

    name = "soft_label"

    def from_log_probs(self, log_probs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        labels = self.levels.soft_labels(batch).to(log_probs)
        return F.kl_div(log_probs, labels, reduction="batchmean")

    def target_distribution(self, batch: dict[str, Any], levels: int) -> torch.Tensor | None:
        return self.levels.soft_labels(batch) if self.levels.ready else None


#: ``module.loss`` name -> how to build it from ``module.levels``.
LOSSES: dict[str, Callable[[dict[str, Any]], ScoreLoss]] = {
    "mse": lambda levels: RegressionLoss("mse"),
    "l1": lambda levels: RegressionLoss("l1"),
    "smooth_l1": lambda levels: RegressionLoss("smooth_l1"),
    "level_ce": lambda levels: LevelCE(**levels),
    "soft_label": lambda levels: SoftLabel(**levels),
}


def make_loss(loss: str | ScoreLoss, levels: dict[str, Any] | None = None) -> ScoreLoss:
    """The :class:`ScoreLoss` of ``module.loss`` (a name of :data:`LOSSES`, or a loss object),
    with ``module.levels`` for the level losses.

    Raises:
        ValueError: An unknown name; the message lists the known ones.
    """
    if isinstance(loss, ScoreLoss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"module.loss={loss!r} must be one of {sorted(LOSSES)}")
    return LOSSES[str(loss)](dict(levels or {}))


def needs_level_words(loss: Any) -> bool:
    """Whether ``module.loss`` (a name or a config node) trains level words."""
    if isinstance(loss, str):
        return loss in LOSSES and LOSSES[loss]({}).needs_logits
    return False


def target_distribution(loss: ScoreLoss, batch: dict[str, Any], levels: int):
    """The rating histogram where the batch has one, else the loss's own target."""
    if "target_hist" in batch:
        return histogram_labels(batch["target_hist"])
    return loss.target_distribution(batch, levels)


__all__ = [
    "LOSSES",
    "LevelCE",
    "LevelLoss",
    "RegressionLoss",
    "ScoreLoss",
    "SoftLabel",
    "make_loss",
    "needs_level_words",
    "target_distribution",
]
