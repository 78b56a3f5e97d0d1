"""Quality scorers: what a module trains and evaluates, behind one explicit base class.

A :class:`QualityScorer` is an ``nn.Module`` that owns its parts (backbone, prompts, heads) and
answers one call, :meth:`QualityScorer.score`: a batch (``pixels`` and whatever else it reads,
e.g. ``image_id``) in, a :class:`ScoreOutput` out (scores, and where it has them the next-token
logits at the answer position and the score words' probabilities, plus per-image extras such as
the description a score was read after). The LightningModule holds the scorer as an ordinary
child module (``module.scorer``) and never reaches into it beyond this contract; the scorer
never reaches back.

:class:`LMMWordScorer` is the LMM one: pixel prompt -> backbone (with a feature prompter on the
vision features) -> next-token logits -> :class:`~iqa_lightning.models.score.WordScore`. Other
methods subclass :class:`QualityScorer` (the perception-then-inference scorer, RALI's CLIP
scorer, the linear probe).

Parameter names are relative to the scorer (``backbone.*``, ``prompt.*``, ``prompter.*``,
``head.*``, ``rali.*``): they are the names in ``tuned.safetensors`` and checkpoints.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from iqa_lightning.models.lora import lora_parameters, projector_parameters
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore

TASKS = frozenset({"score", "instruct", "mcq"})


@dataclass
class ScoreOutput:
    """What a scorer gives for a batch.

    Attributes:
        scores: ``[B]`` fp32 quality scores.
        logits: ``[B, vocab]`` next-token logits at the answer position, for scorers that read
            a word distribution (what the level losses train); None otherwise.
        probs: ``[B, words]`` fp32 probabilities of the score words (None without words).
        extras: Per-image values to keep with the predictions, each a list of ``B``
            (e.g. ``{"description": [...]}``).
    """

    scores: torch.Tensor
    logits: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    extras: dict[str, list[Any]] = field(default_factory=dict)


def declared_parameters(part: nn.Module) -> dict[str, nn.Parameter]:
    """A part's declared trainable parameters (its ``trainable_parameters()``, else all)."""
    declare = getattr(part, "trainable_parameters", None)
    return dict(declare()) if declare is not None else dict(part.named_parameters())


def prefixed(prefix: str, params: dict[str, nn.Parameter]) -> dict[str, nn.Parameter]:
    """``params`` with ``prefix.`` before each name."""
    return {f"{prefix}.{name}": p for name, p in params.items()}


class QualityScorer(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every scorer a module trains and evaluates.

    Subclasses set :attr:`tasks`, register their parts as child modules and implement
    :meth:`score` and :meth:`parameter_groups`; :meth:`forward` (pixels -> scores) follows.

    Attributes:
        tasks: The tasks it serves, a subset of ``{"score", "instruct", "mcq"}``.
    """

    tasks: frozenset[str] = frozenset({"score"})

    @abc.abstractmethod
    def score(self, batch: dict[str, Any]) -> ScoreOutput:
        """The :class:`ScoreOutput` of a batch (``pixels`` ``[B, 3, R, R]`` in [0, 1], ...)."""

    @abc.abstractmethod
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Group name -> ``{parameter name relative to the scorer: parameter}``; empty groups
        left out."""

    @property
    def word_head(self) -> WordScore | None:
        """The word-score head whose words :attr:`ScoreOutput.logits` are read at (None: the
        scorer reads no words, so no level loss can train it)."""
        return None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Quality scores ``[B]`` (fp32) for ``[B, 3, R, R]`` pixels in [0, 1]."""
        return self.score({"pixels": pixels}).scores

    def distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` fp32 probabilities over the scorer's levels or words."""
        probs = self.score({"pixels": pixels}).probs
        if probs is None:
            raise ValueError(f"{type(self).__name__} gives no distribution over words or levels")
        return probs


class LMMWordScorer(QualityScorer):
    """Scores from the logits of quality words of a (frozen) LMM.

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone`.
        prompt: A pixel prompt (``group = "prompt"``) or a feature prompter
            (``group = "prompter"``, with ``conditioned`` and ``adapt``).
        score: The :class:`WordScore` head (bound to the backbone's tokenizer here).

    Children: ``backbone``, ``prompter`` (a feature prompter, else None), ``prompt`` (a pixel
    prompt, else :class:`NoPrompt`) and ``head`` (the word score, which holds no parameters).
    """

    tasks = TASKS

    def __init__(self, backbone: nn.Module, prompt: nn.Module, score: WordScore) -> None:
        super().__init__()
        feature = getattr(prompt, "group", "prompt") == "prompter"
        if feature and not hasattr(prompt, "adapt"):
            raise TypeError(f"{type(prompt).__name__} has group 'prompter' but no adapt()")
        self.backbone = backbone
        self.prompter = prompt if feature else None
        self.prompt = NoPrompt() if feature else prompt
        self.head = score.bind(backbone)
        self.input_ids = backbone.encode_prompt(score.question, score.answer_prefix)
        self._ids: dict[torch.device, torch.Tensor] = {}
        self._letter_ids: dict[str, int] = {}

    @property
    def word_head(self) -> WordScore:
        return self.head

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Every declared group (empty ones left out), each as ``{name: parameter}``."""
        groups: dict[str, dict[str, nn.Parameter]] = {}
        for attr in ("prompt", "prompter"):
            part = getattr(self, attr)
            if part is not None:
                group = getattr(part, "group", attr)
                groups.setdefault(group, {}).update(prefixed(attr, declared_parameters(part)))
        groups["lora"] = prefixed("backbone", lora_parameters(self.backbone))
        groups["projector"] = prefixed("backbone", projector_parameters(self.backbone))
        return {name: params for name, params in groups.items() if params}

    # ---------------------------------------------------------------- forward
    def features(
        self, instructions: Sequence[str | Sequence[str]]
    ) -> contextlib.AbstractContextManager:
        """Within the block the vision features go through the prompter, conditioned on the
        instructions (one per image: a string, or the human turns of its conversation, of
        which the prompter reads those its ``condition_on`` names); a no-op without a
        prompter."""
        if self.prompter is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(self.prompter.conditioned(instructions))
        stack.enter_context(self.backbone.feature_hook(self.prompter.adapt))
        return stack

    def _prompt_ids(self, device: torch.device) -> torch.Tensor:
        if device not in self._ids:
            self._ids[device] = self.input_ids.to(device)
        return self._ids[device]

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, vocab]`` next-token logits at the answer position of the score prompt."""
        with self.features([self.head.question] * pixels.shape[0]):
            return self.backbone.next_token_logits(
                self.prompt(pixels), self._prompt_ids(pixels.device)
            )

    def output(self, logits: torch.Tensor, **extras: list[Any]) -> ScoreOutput:
        """The :class:`ScoreOutput` of next-token logits at the answer position."""
        with torch.autocast(logits.device.type, enabled=False):
            probs = self.head.probabilities(logits)
        return ScoreOutput(self.head(logits), logits=logits, probs=probs, extras=extras)

    def score(self, batch: dict[str, Any]) -> ScoreOutput:
        return self.output(self.logits(batch["pixels"]))

    # ------------------------------------------------------------ other tasks
    def instruct_loss(self, pixels: torch.Tensor, turns: Sequence[Any]) -> torch.Tensor:
        """Cross-entropy on the answer tokens of one conversation per image."""
        encoded = [self.backbone.encode_conversation(t) for t in turns]
        ids, mask, labels = self.backbone.pad_conversations(encoded)
        with self.features([[question for question, _ in t] for t in turns]):
            return self.backbone.lm_loss(self.prompt(pixels), ids, mask, labels)

    def option_logits(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``[B, vocab]`` next-token logits after each multiple-choice prompt."""
        ids, mask = self.backbone.encode_prompts(list(prompts))
        with self.features(list(prompts)):
            return self.backbone.next_token_logits(self.prompt(pixels), ids, mask)

    def letter_id(self, letter: str) -> int:
        """The token id of an option letter as the first answer token."""
        if letter not in self._letter_ids:
            self._letter_ids[letter] = self.backbone.first_answer_token_id(letter)
        return self._letter_ids[letter]

    def generate(
        self, pixels: torch.Tensor, questions: Sequence[str], max_new_tokens: int
    ) -> list[str]:
        """Greedy answers to one question per image."""
        with self.features(list(questions)):
            return self.backbone.generate(self.prompt(pixels), list(questions), max_new_tokens)


__all__ = [
    "TASKS",
    "LMMWordScorer",
    "QualityScorer",
    "ScoreOutput",
    "declared_parameters",
    "prefixed",
]
