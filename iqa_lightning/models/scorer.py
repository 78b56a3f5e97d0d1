"""Quality scorers: what the module trains and evaluates, behind one small protocol.

A :class:`QualityScorer` maps pixels to scores; :class:`LMMWordScorer` is the LMM one used by
every method here today: pixel prompt -> backbone (with a feature prompter on the vision
features) -> next-token logits -> :class:`~iqa_lightning.models.score.WordScore`. A later family
(e.g. RALI's LLM-free scorer, arXiv 2510.11369) implements the same protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from iqa_lightning.models.lora import lora_parameters, projector_parameters
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore

TASKS = frozenset({"score", "instruct", "mcq"})
PARTS = ("backbone", "prompter", "prompt", "score")


@runtime_checkable
class QualityScorer(Protocol):
    """What the module needs of a scorer.

    ``forward(pixels)`` (and calling it): ``[B, 3, R, R]`` pixels in [0, 1] -> ``[B]`` fp32
    scores.
    ``distribution(pixels)`` (optional): ``[B, levels]`` probabilities over quality levels.
    ``tasks``: the tasks it serves, a subset of ``{"score", "instruct", "mcq"}``.
    ``parameter_groups()``: group name -> ``{full parameter name: parameter}``.
    """

    tasks: frozenset[str]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def forward(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]: ...


def declared_parameters(part: nn.Module) -> dict[str, nn.Parameter]:
    """A part's declared trainable parameters (its ``trainable_parameters()``, else all)."""
    declare = getattr(part, "trainable_parameters", None)
    return dict(declare()) if declare is not None else dict(part.named_parameters())


class LMMWordScorer:
    """Scores from the logits of quality words of a (frozen) LMM.

    Not an ``nn.Module``: the owner registers its parts under the names :meth:`parts` gives
    (``backbone``, ``prompter``, ``prompt``, ``score``) and passes itself to :meth:`attach`, so
    parameter and checkpoint names stay ``backbone.*``, ``prompt.*``, ``prompter.*``.

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone`.
        prompt: A pixel prompt (``group = "prompt"``) or a feature prompter
            (``group = "prompter"``, with ``conditioned`` and ``adapt``).
        score: The :class:`WordScore` head (bound to the backbone's tokenizer here).
    """

    tasks = TASKS

    def __init__(self, backbone: nn.Module, prompt: nn.Module, score: WordScore) -> None:
        feature = getattr(prompt, "group", "prompt") == "prompter"
        if feature and not hasattr(prompt, "adapt"):
            raise TypeError(f"{type(prompt).__name__} has group 'prompter' but no adapt()")
        self._owner: Any = SimpleNamespace(
            backbone=backbone,
            prompter=prompt if feature else None,
            prompt=NoPrompt() if feature else prompt,
            score=score.bind(backbone),
        )
        self.input_ids = backbone.encode_prompt(score.question, score.answer_prefix)
        self._ids: dict[torch.device, torch.Tensor] = {}
        self._letter_ids: dict[str, int] = {}

    def parts(self) -> dict[str, nn.Module | None]:
        """The modules the owner registers, by attribute name (in registration order)."""
        return {name: getattr(self._owner, name) for name in PARTS}

    def attach(self, owner: Any) -> None:
        """Read the parts from ``owner``'s attributes from now on, so that a part a strategy
        wraps in place (FSDP) is called through its wrapper."""
        self._owner = owner

    @property
    def backbone(self) -> nn.Module:
        return self._owner.backbone

    @property
    def prompt(self) -> nn.Module:
        return self._owner.prompt

    @property
    def prompter(self) -> nn.Module | None:
        return self._owner.prompter

    @property
    def score(self) -> WordScore:
        return self._owner.score

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Every declared group (empty ones left out), each as ``{full name: parameter}``."""
        groups: dict[str, dict[str, nn.Parameter]] = {}
        for attr in ("prompt", "prompter"):
            part = getattr(self, attr)
            if part is None:
                continue
            params = {f"{attr}.{n}": p for n, p in declared_parameters(part).items()}
            groups.setdefault(getattr(part, "group", attr), {}).update(params)
        groups["lora"] = {f"backbone.{n}": p for n, p in lora_parameters(self.backbone).items()}
        groups["projector"] = {
            f"backbone.{n}": p for n, p in projector_parameters(self.backbone).items()
        }
        return {name: params for name, params in groups.items() if params}

    # ---------------------------------------------------------------- forward
    def features(self, instructions: Sequence[str]) -> contextlib.AbstractContextManager:
        """Within the block the vision features go through the prompter, conditioned on the
        instructions (one per image); a no-op without a prompter."""
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
        with self.features([self.score.question] * pixels.shape[0]):
            return self.backbone.next_token_logits(
                self.prompt(pixels), self._prompt_ids(pixels.device)
            )

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward(pixels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Quality scores ``[B]`` (fp32) for ``[B, 3, R, R]`` pixels in [0, 1]."""
        return self.score(self.logits(pixels))

    def distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, len(words)]`` fp32 probabilities of the score words."""
        logits = self.logits(pixels)
        with torch.autocast(logits.device.type, enabled=False):
            return self.score.probabilities(logits)

    # ------------------------------------------------------------ other tasks
    def instruct_loss(self, pixels: torch.Tensor, turns: Sequence[Any]) -> torch.Tensor:
        """Cross-entropy on the answer tokens of one conversation per image."""
        encoded = [self.backbone.encode_conversation(t) for t in turns]
        ids, mask, labels = self.backbone.pad_conversations(encoded)
        with self.features([t[0][0] for t in turns]):
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


__all__ = ["TASKS", "LMMWordScorer", "QualityScorer", "declared_parameters"]
