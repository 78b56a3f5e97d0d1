"""The configuration of mPLUG-Owl2 as its checkpoints publish it (``model_type: mplug_owl2``).

mPLUG-Owl2 (https://arxiv.org/abs/2311.04257): the LLaMA keys at the top level and a
``visual_config`` dict with ``visual_model`` (the ViT) and ``visual_abstractor`` (the query
transformer), each the full dump of the original sub-config. The published ``config.json`` is
read as it is; only the keys these classes define are taken from the two dumps.
"""

from __future__ import annotations

from dataclasses import fields

from transformers import LlamaConfig, PreTrainedConfig


class _TowerConfig(PreTrainedConfig):
    """What the ViT's and the abstractor's configurations share, with the defaults both give."""

    hidden_size: int = 1024
    num_attention_heads: int = 16
    layer_norm_eps: float | int = 1e-6
    initializer_range: float | int = 0.02


class MplugOwl2VisionConfig(_TowerConfig):
    """The ViT of mPLUG-Owl2 (``visual_config.visual_model``; ViT-L/14 at 448 px by default).

    The MLP always uses QuickGELU, as the original does whatever ``hidden_act`` says.
    """

    model_type = "mplug_owl_vision_model"

    intermediate_size: int = 4096
    projection_dim: int = 768
    num_hidden_layers: int = 24
    num_channels: int = 3
    image_size: int = 448
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    attention_dropout: float | int = 0.0
    initializer_factor: float | int = 1.0
    use_flash_attn: bool = False


class MplugOwl2AbstractorConfig(_TowerConfig):
    """The visual abstractor (``visual_config.visual_abstractor``): learnable queries that
    cross-attend to the ViT's tokens, then a projection to the language model's width."""

    model_type = "mplug_owl_visual_abstract"

    num_learnable_queries: int = 64
    num_hidden_layers: int = 6
    intermediate_size: int = 2816
    attention_probs_dropout_prob: float | int = 0.0
    encoder_hidden_size: int = 1024
    grid_size: int | None = None

    def __post_init__(self, **kwargs):
        # The original's default: a 32 x 32 patch grid (448 / 14).
        if not self.grid_size:
            self.grid_size = 32
        super().__post_init__(**kwargs)


def _known(config_cls: type[PreTrainedConfig], dump: dict | None) -> dict:
    """The keys of an original sub-config dump that ``config_cls`` declares."""
    names = {f.name for f in fields(config_cls)} - {f.name for f in fields(PreTrainedConfig)}
    return {k: v for k, v in (dump or {}).items() if k in names}


class MplugOwl2Config(LlamaConfig):
    """LLaMA's keys plus ``visual_config`` (``{"visual_model": ..., "visual_abstractor": ...}``).

    ``visual_config`` is kept as the dict the checkpoint holds, so saving writes the published
    layout back; :attr:`vision_config` and :attr:`abstractor_config` are typed views of it.
    """

    model_type = "mplug_owl2"

    visual_config: dict | None = None

    def __post_init__(self, **kwargs):
        visual = dict(self.visual_config or {})
        visual.setdefault("visual_model", MplugOwl2VisionConfig().to_dict())
        visual.setdefault("visual_abstractor", MplugOwl2AbstractorConfig().to_dict())
        self.visual_config = visual
        super().__post_init__(**kwargs)

    @property
    def vision_config(self) -> MplugOwl2VisionConfig:
        """The ViT's configuration, read from ``visual_config["visual_model"]``."""
        return MplugOwl2VisionConfig(**_known(MplugOwl2VisionConfig, self._visual("visual_model")))

    @property
    def abstractor_config(self) -> MplugOwl2AbstractorConfig:
        """The abstractor's configuration, read from ``visual_config["visual_abstractor"]``."""
        dump = self._visual("visual_abstractor")
        return MplugOwl2AbstractorConfig(**_known(MplugOwl2AbstractorConfig, dump))

    def _visual(self, key: str) -> dict:
        if not isinstance(self.visual_config, dict) or not isinstance(
            self.visual_config.get(key), dict
        ):
            raise ValueError(f"config.json: visual_config.{key} must be a dict of its settings")
        return self.visual_config[key]
