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
- Whole-answer losses train the answer "The quality of the image is <level>." with the
  next-token loss (:class:`~iqa_lightning.models.answers.LevelAnswers`, one more forward pass
  of the conversation): :class:`LevelAnswerCE` (``level_ce_answer``, Q-Align's target) and
  :class:`DeQAScoreLoss` (``deqa_score``, DeQA-Score's whole loss: the KL inside the next-token
  loss at weight 0.05 plus the fidelity rank loss on pairs of images, batches from
  ``dataset.sampler=pairs``).

Adding a loss: a subclass of :class:`ScoreLoss` in a file of its own, and a line in
:data:`LOSSES` for its short name (or give its ``_target_`` in the config).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from iqa_lightning.errors import ConfigError
from iqa_lightning.models.answers import LevelAnswers
from iqa_lightning.models.levels import (
    LevelTargets,
    check_level_words,
    histogram_labels,
    to_level_scale,
)
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
        target = self.levels.levels_of(batch).to(log_probs.device)
        return F.nll_loss(log_probs, target)

    def target_distribution(self, batch: dict[str, Any], levels: int) -> torch.Tensor | None:
        if not self.levels.ready:
            return None
        return F.one_hot(self.levels.levels_of(batch).cpu(), levels).double()


class SoftLabel(LevelLoss):
    """DeQA-Score: ``KL(label || predicted)`` to each image's level distribution, averaged over
    the batch."""

    name = "soft_label"

    def from_log_probs(self, log_probs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        labels = self.levels.soft_labels(batch).to(log_probs)
        return F.kl_div(log_probs, labels, reduction="batchmean")

    def target_distribution(self, batch: dict[str, Any], levels: int) -> torch.Tensor | None:
        return self.levels.soft_labels(batch) if self.levels.ready else None


class LevelAnswerCE(LevelCE):
    """Q-Align's target: the next-token cross-entropy on the whole answer "The quality of the
    image is <level>." (every answer token and the end of the turn, averaged over the batch's
    tokens; q_align/model/modeling_mplug_owl2.py:336-341), the level word being each image's
    Q-Align level. ``level_ce`` trains the level token alone."""

    name = "level_ce_answer"

    def check(self, scorer: QualityScorer) -> None:
        super().check(scorer)
        self.answers = LevelAnswers(scorer, self.name)

    def __call__(self, output: ScoreOutput, batch: dict[str, Any]) -> torch.Tensor:
        levels = self.levels.levels_of(batch).tolist()
        return self.answers.loss_of(batch["pixels"], levels, mask_level=False)


#: The 1-5 level scale value of each level word, best first (DeQA-Score's ``weights``).
LEVEL_VALUES = (5.0, 4.0, 3.0, 2.0, 1.0)


def thurstone_fidelity(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    gt_a: torch.Tensor,
    gt_b: torch.Tensor,
    std_a: torch.Tensor,
    std_b: torch.Tensor,
    pred_std_a: torch.Tensor | None = None,
    pred_std_b: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """DeQA-Score's rank loss on pairs (``rating_loss``, src/model/modeling_mplug_owl2.py:669-693):
    the fidelity between the Thurstone probabilities that A beats B.

    Predicted: ``Phi((s_a - s_b) / sqrt(v))`` with the fixed variance ``v = 2`` (each score's
    variance 1 on the 1-5 scale; ``use_fix_std``) or, with predicted stds, ``v = sd_a^2 + sd_b^2``
    (detached). Ground truth: ``Phi((g_a - g_b) / sqrt(std_a^2 + std_b^2))`` (any units, the
    same for scores and stds). Loss: ``1 - sqrt(p g) - sqrt((1 - p)(1 - g))``, averaged.
    """
    if pred_std_a is None or pred_std_b is None:
        pred = 0.5 * (1 + torch.erf((score_a - score_b) / 2))
    else:
        var = (pred_std_a * pred_std_a + pred_std_b * pred_std_b + eps).detach()
        pred = 0.5 * (1 + torch.erf((score_a - score_b) / torch.sqrt(2 * var)))
    gt_var = std_a * std_a + std_b * std_b + eps
    gt = 0.5 * (1 + torch.erf((gt_a - gt_b) / torch.sqrt(2 * gt_var))).to(pred).detach()
    return (1 - (pred * gt + eps).sqrt() - ((1 - pred) * (1 - gt) + eps).sqrt()).mean()


class DeQAScoreLoss(ScoreLoss):
    """DeQA-Score's loss on a batch of image pairs (``forward_pair``,
    src/model/modeling_mplug_owl2.py:587-667, with scripts/train.sh:13-19's settings):

    ``weight_rank * fidelity + weight_next_token * sum over A, B of (CE + weight_softkl * KL)``

    - CE: the next-token loss on the answer "The quality of the image is <level>." without its
      level token (the reference deletes that position), averaged over the half's tokens;
    - KL: ``KL(soft label || softmax over the vocabulary)`` at the level token, over the half;
    - fidelity: :func:`thurstone_fidelity` between the pairs' predicted scores (the five level
      words' probabilities, renormalised over the five (``closeset``), weighted 5..1) and their
      ground-truth scores and rating stds.

    The batch is ``[A_1 .. A_n, B_1 .. B_n]`` (``dataset.sampler=pairs``, which also sets
    ``batch["pairs"] = n``); a batch without that key (validation) pairs its first half with its
    second. Each image's rating std comes from the batch (``target_std``) or
    ``module.levels.std``.

    Args:
        weight_rank: ``--weight_rank`` (1.0).
        weight_softkl: ``--weight_softkl`` (1.0), relative to the next-token loss.
        weight_next_token: ``--weight_next_token`` (0.05); 0 leaves the next-token and KL
            terms out (no second forward pass).
        fixed_std: ``--use_fix_std`` (True): the predicted scores' variance is fixed at 1.
        closeset: ``--closeset_rating_loss`` (True): the score from the softmax over the five
            words; False: from their probabilities in the softmax over the vocabulary.
        **levels: :class:`LevelTargets` settings (``module.levels``).
    """

    name = "deqa_score"
    needs_logits = True

    def __init__(
        self,
        weight_rank: float = 1.0,
        weight_softkl: float = 1.0,
        weight_next_token: float = 0.05,
        fixed_std: bool = True,
        closeset: bool = True,
        **levels: Any,
    ) -> None:
        self.soft_label = SoftLabel(**levels)
        self.levels = self.soft_label.levels
        for key, value in (("weight_rank", weight_rank), ("weight_softkl", weight_softkl),
                           ("weight_next_token", weight_next_token)):  # fmt: skip
            if not float(value) >= 0:
                raise ValueError(f"module.loss.{key}={value} must be a weight >= 0")
        self.weight_rank = float(weight_rank)
        self.weight_softkl = float(weight_softkl)
        self.weight_next_token = float(weight_next_token)
        self.fixed_std = bool(fixed_std)
        self.closeset = bool(closeset)
        self.answers: LevelAnswers | None = None

    def check(self, scorer: QualityScorer) -> None:
        self.soft_label.check(scorer)
        if self.weight_next_token > 0:
            self.answers = LevelAnswers(scorer, self.name)

    def setup(self, datamodule: Any) -> None:
        """The score range (as every level loss) and a check that training batches are pairs."""
        self.soft_label.setup(datamodule)
        data = getattr(datamodule, "score_datamodule", datamodule)
        sampler = getattr(data, "sampler", None)
        if sampler is not None and sampler != "pairs":
            raise ConfigError(
                f"module.loss={self.name} trains on pairs of images of the same dataset (DeQA-"
                f"Score's pair dataset); dataset.sampler={sampler!r}: set dataset.sampler=pairs"
            )

    def __call__(self, output: ScoreOutput, batch: dict[str, Any]) -> torch.Tensor:
        with torch.autocast(output.logits.device.type, enabled=False):
            log_probs = self.soft_label.log_probs(output)  # [B, 5]: the words in the vocab softmax
            token_ids = self.soft_label.token_ids.to(output.logits.device)
            words = output.logits.float().index_select(-1, token_ids)
            ce = self.answer_losses(batch) if self.weight_next_token > 0 else None
            return self.combine(log_probs, words, batch, ce)["loss"]

    def halves(self, batch: dict[str, Any]) -> int:
        """Pairs in the batch: ``batch["pairs"]``, else half the batch (at least one pair).

        Raises:
            ValueError: A batch too small to pair, or ``pairs`` that does not fit it.
        """
        size = len(batch["target"])
        pairs = batch.get("pairs")
        pairs = size // 2 if pairs is None else int(pairs[0] if isinstance(pairs, list) else pairs)
        if pairs < 1 or 2 * pairs > size:
            raise ValueError(
                f"module.loss={self.name}: a batch of {size} image(s) holds no pairs "
                f"(pairs={batch.get('pairs')}); train with dataset.sampler=pairs"
            )
        return pairs

    def answer_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The next-token loss of the answer without its level token, for the A and B halves."""
        n = self.halves(batch)
        levels = self.levels.levels_of(batch).tolist()
        pixels = batch["pixels"]
        return tuple(
            self.answers.loss_of(pixels[part], levels[part], mask_level=True)
            for part in (slice(0, n), slice(n, 2 * n))
        )

    def ground_truth(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and rating stds on the 1-5 level scale (the fidelity is scale-free)."""
        if "target_std" in batch:
            return to_level_scale(batch["target"], *self.levels.bounds, batch["target_std"])
        if self.levels.std is None:
            raise ValueError(
                f"module.loss={self.name} needs each image's rating std for its rank loss, but "
                "the dataset gives none (no target_std in the batch); set module.levels.std="
                "<std on the 1-5 level scale>"
            )
        mos, _ = to_level_scale(batch["target"], *self.levels.bounds)
        return mos, torch.full_like(mos, self.levels.std)

    def combine(
        self,
        log_probs: torch.Tensor,
        word_logits: torch.Tensor,
        batch: dict[str, Any],
        answer_ce: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> dict[str, torch.Tensor]:
        """The loss and its terms from the level words' vocabulary log-probabilities
        ``[B, 5]``, their logits ``[B, 5]`` and the halves' answer losses (None: no next-token
        term). Keys: ``loss``, ``rank``, ``kl_a``, ``kl_b``, ``next_token_a``, ``next_token_b``,
        ``scores``, ``stds`` (the predicted ones, 1-5 scale)."""
        n = self.halves(batch)
        a, b = slice(0, n), slice(n, 2 * n)
        probs = torch.softmax(word_logits, -1) if self.closeset else log_probs.exp()
        values = torch.tensor(LEVEL_VALUES, dtype=probs.dtype, device=probs.device)
        scores = probs @ values
        stds = (probs * (values - scores.unsqueeze(-1)) ** 2).sum(-1).sqrt()
        gt, gt_std = self.ground_truth(batch)
        gt, gt_std = gt.to(scores), gt_std.to(scores)
        pred_std = (None, None) if self.fixed_std else (stds[a], stds[b])
        rank = thurstone_fidelity(
            scores[a], scores[b], gt[a], gt[b], gt_std[a], gt_std[b], *pred_std
        )
        terms = {"rank": rank, "scores": scores, "stds": stds}
        loss = self.weight_rank * rank
        if answer_ce is not None:
            labels = self.levels.soft_labels(batch, f"module.loss={self.name}").to(log_probs)
            for half, part, ce in (("a", a, answer_ce[0]), ("b", b, answer_ce[1])):
                kl = F.kl_div(log_probs[part], labels[part], reduction="batchmean")
                terms[f"kl_{half}"] = kl
                terms[f"next_token_{half}"] = ce + self.weight_softkl * kl
                loss = loss + self.weight_next_token * terms[f"next_token_{half}"]
        terms["loss"] = loss
        return terms

    def target_distribution(self, batch: dict[str, Any], levels: int) -> torch.Tensor | None:
        return self.levels.soft_labels(batch) if self.levels.ready else None


#: ``module.loss`` name -> how to build it from ``module.levels``.
LOSSES: dict[str, Callable[[dict[str, Any]], ScoreLoss]] = {
    "mse": lambda levels: RegressionLoss("mse"),
    "l1": lambda levels: RegressionLoss("l1"),
    "smooth_l1": lambda levels: RegressionLoss("smooth_l1"),
    "level_ce": lambda levels: LevelCE(**levels),
    "soft_label": lambda levels: SoftLabel(**levels),
    "level_ce_answer": lambda levels: LevelAnswerCE(**levels),
    "deqa_score": lambda levels: DeQAScoreLoss(**levels),
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


def target_distribution(loss: ScoreLoss, batch: dict[str, Any], levels: int):
    """The rating histogram where the batch has one, else the loss's own target."""
    if "target_hist" in batch:
        return histogram_labels(batch["target_hist"])
    return loss.target_distribution(batch, levels)


__all__ = [
    "LEVEL_VALUES",
    "LOSSES",
    "DeQAScoreLoss",
    "LevelAnswerCE",
    "LevelCE",
    "LevelLoss",
    "RegressionLoss",
    "ScoreLoss",
    "SoftLabel",
    "make_loss",
    "target_distribution",
    "thurstone_fidelity",
]
