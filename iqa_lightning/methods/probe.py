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
from iqa_lightning.models.scorer import (
    QualityScorer,
    ScoreOutput,
    declared_parameters,
    prefixed,
)


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


class ProbeScorer(QualityScorer):
    """Scores from a head on pooled vision features.

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone` (frozen).
        prompt: A pixel prompt applied before the backbone (``NoPrompt`` for none).
        score: The word-score head of the config; only its question is used (the prompt whose
            forward carries the image to the vision tower).
        hidden: Hidden units of the head (0: linear).
    """

    def __init__(self, backbone: nn.Module, prompt: nn.Module, score: Any, hidden: int = 0):
        super().__init__()
        self.backbone = backbone
        self.prompt = prompt
        self.head = ProbeHead(backbone.vision_feature_dim, hidden)
        self.input_ids = backbone.encode_prompt(score.question, score.answer_prefix)

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        groups = {
            "head": prefixed("head", dict(self.head.named_parameters())),
            "prompt": prefixed("prompt", declared_parameters(self.prompt)),
        }
        return {name: params for name, params in groups.items() if params}

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mean-pooled vision features ``[B, D]`` of the prompted pixels."""

        def capture(features: torch.Tensor) -> torch.Tensor:
            raise _Captured(features)

        try:
            with self.backbone.feature_hook(capture):
                self.backbone._forward(self.prompt(pixels), self.input_ids)
        except _Captured as found:
            return found.features.float().mean(dim=1)
        raise RuntimeError(
            f"{type(self.backbone).__name__}: the vision features never reached the hook"
        )

    def score(self, batch: dict[str, Any]) -> ScoreOutput:
        return ScoreOutput(self.head(self.features(batch["pixels"])))


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
