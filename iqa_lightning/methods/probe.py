"""A linear (or small MLP) probe: a regression head on the frozen backbone's pooled vision
features, the field's standard baseline for what a backbone's image features already know.

    python train.py method=probe experiment=demo
    python train.py method=probe model=llava_1_5_7b dataset=koniq method.hidden=256

The features are the vision tower's output where it enters the projector (the point every
family exposes: :meth:`~iqa_lightning.models.backbones.Backbone.feature_module`), seen through
the run's pixel prompt (``prompt=none`` by default), mean-pooled over the image's tokens. The
forward stops there: the language model never runs. The head (``head`` parameter group) is the
only part trained; it is saved with the tuned tensors like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from iqa_lightning.methods import Method, register
from iqa_lightning.methods.word_score import WordScore
from iqa_lightning.models.scorer import declared_parameters


class _Captured(Exception):
    """Raised by the feature hook to stop the forward once the vision features are known."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__("vision features captured")
        self.features = features


class ProbeHead(nn.Module):
    """Pooled features -> a score: LayerNorm, then a linear layer (``hidden=0``) or one hidden
    layer of ``hidden`` units with GELU."""

    group = "head"

    def __init__(self, feature_dim: int, hidden: int = 0) -> None:
        super().__init__()
        if hidden < 0:
            raise ValueError(f"method.hidden={hidden} must be 0 (linear) or more")
        layers: list[nn.Module] = [nn.LayerNorm(feature_dim)]
        if hidden:
            layers += [nn.Linear(feature_dim, hidden), nn.GELU(), nn.Linear(hidden, 1)]
        else:
            layers.append(nn.Linear(feature_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float()).squeeze(-1)


class ProbeScorer:
    """Scores from a head on pooled vision features (the scorer contract of
    :class:`~iqa_lightning.module.IQAModule`: ``parts``, ``attach``, ``parameter_groups``,
    ``tasks``, calling it on pixels).

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone` (frozen).
        prompt: A pixel prompt applied before the backbone (``NoPrompt`` for none).
        score: The word-score head of the config; only its question is used (the prompt whose
            forward carries the image to the vision tower).
        hidden: Hidden units of the head (0: linear).
    """

    tasks = frozenset({"score"})

    def __init__(self, backbone: nn.Module, prompt: nn.Module, score: Any, hidden: int = 0):
        from types import SimpleNamespace

        self._owner: Any = SimpleNamespace(
            backbone=backbone, prompt=prompt, head=ProbeHead(backbone.vision_feature_dim, hidden)
        )
        self.input_ids = backbone.encode_prompt(score.question, score.answer_prefix)

    def parts(self) -> dict[str, nn.Module]:
        return {name: getattr(self._owner, name) for name in ("backbone", "prompt", "head")}

    def attach(self, owner: Any) -> None:
        self._owner = owner

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        groups = {
            "head": {f"head.{n}": p for n, p in self._owner.head.named_parameters()},
            "prompt": {
                f"prompt.{n}": p for n, p in declared_parameters(self._owner.prompt).items()
            },
        }
        return {name: params for name, params in groups.items() if params}

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mean-pooled vision features ``[B, D]`` of the prompted pixels."""
        backbone = self._owner.backbone

        def capture(features: torch.Tensor) -> torch.Tensor:
            raise _Captured(features)

        try:
            with backbone.feature_hook(capture):
                backbone._forward(self._owner.prompt(pixels), self.input_ids)
        except _Captured as found:
            return found.features.float().mean(dim=1)
        raise RuntimeError(f"{type(backbone).__name__}: the vision features never reached the hook")

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._owner.head(self.features(pixels))

    forward = __call__


@register
class Probe(Method):
    """:class:`ProbeScorer` in the word-score module (its phases, loss, metrics, run files)."""

    name = "probe"

    def build_module(self, cfg: Any, run: Path | None = None, datamodule: Any = None):
        parts = WordScore().parts(cfg)
        hidden = int((cfg.get("method") or {}).get("hidden", 0))
        return instantiate(
            cfg.module, **parts, lora=None,
            scorer=lambda backbone, prompt, score: ProbeScorer(backbone, prompt, score, hidden),
        )  # fmt: skip
