"""LoRA adapters on a frozen backbone, through ``peft`` (LoRA: arXiv 2106.09685).

Adapters are injected in place (``peft.inject_adapter_in_model``), so the backbone keeps its
module paths and forward; their parameters (``...lora_A...``, ``...lora_B...``) form the ``lora``
parameter group. The language model is the usual target; the vision tower can be targeted too,
and then its adapters train for real (nothing here runs the vision tower under ``no_grad``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn


def _module_path(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not inside {type(root).__name__}")


def add_lora(
    backbone,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] | None = None,
    vision: bool = False,
    vision_target_modules: Sequence[str] | None = None,
) -> list[str]:
    """Inject LoRA into the backbone's language model (and optionally its vision tower).

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone`.
        r: Rank.
        alpha: Scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the adapter input.
        target_modules: Linear layer names to adapt in the language model; ``None``: the
            family's (:attr:`Backbone.lora_targets`, e.g. every projection of a LLaMA layer).
        vision: Also adapt the vision tower.
        vision_target_modules: Linear layer names to adapt in the vision tower; ``None``: the
            family's (:attr:`Backbone.vision_lora_targets`).

    Returns:
        The names of the adapted modules.

    Raises:
        ValueError: No module matched; names the config key.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if r <= 0:
        raise ValueError(f"stage.lora.r={r} must be positive")
    if target_modules is None:
        target_modules = backbone.lora_targets
    if vision_target_modules is None:
        vision_target_modules = backbone.vision_lora_targets
    model = backbone.model
    parts = [(_module_path(model, backbone.language_model()), list(target_modules))]
    if vision:
        parts.append((_module_path(model, backbone.vision_tower()), list(vision_target_modules)))
    patterns = [
        rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, names))})"
        for prefix, names in parts
        if names
    ]
    pattern = "|".join(f"(?:{p})" for p in patterns)
    matched = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(pattern, n)
    ]
    if not matched:
        raise ValueError(
            f"stage.lora.target_modules={list(target_modules)} matched no linear layer of the "
            f"{backbone.family} backbone"
        )
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none"
    )
    inject_adapter_in_model(config, model)
    backbone.freeze()
    return matched


def lora_parameters(backbone) -> dict[str, nn.Parameter]:
    """The LoRA parameters of a backbone (the ``lora`` group), by name relative to it.

    Declared by ``peft`` itself: the parameters of each adapter layer's ``adapter_layer_names``
    (``lora_A``, ``lora_B``, ...), in the backbone's parameter order.
    """
    from peft.tuners.lora import LoraLayer

    ids = set()
    for module in backbone.modules():
        if isinstance(module, LoraLayer):
            for attr in module.adapter_layer_names:
                ids.update(id(p) for p in getattr(module, attr).parameters())
    return {n: p for n, p in backbone.named_parameters() if id(p) in ids}


def language_model_parameters(backbone) -> dict[str, nn.Parameter]:
    """The decoder's own weights (the ``language_model`` group: full-parameter tuning), by name
    relative to the backbone: its language model and LM head, LoRA's parameters left out."""
    modules = (backbone.language_model(), backbone.lm_head())
    ids = {id(p) for module in modules for p in module.parameters()}
    ids -= {id(p) for p in lora_parameters(backbone).values()}
    return {n: p for n, p in backbone.named_parameters() if id(p) in ids}


def projector_parameters(backbone) -> dict[str, nn.Parameter]:
    """The projector's own parameters (the ``projector`` group; LoRA inside it left out), by
    name relative to the backbone, as :meth:`Backbone.projector` declares the projector."""
    ids = {id(p) for p in backbone.projector().parameters()}
    lora = {id(p) for p in lora_parameters(backbone).values()}
    return {n: p for n, p in backbone.named_parameters() if id(p) in ids and id(p) not in lora}
