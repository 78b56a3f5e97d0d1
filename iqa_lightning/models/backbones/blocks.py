"""The repeated transformer blocks of a backbone: what gradient checkpointing recomputes and what
FSDP shards as one unit each.

A block is a ``transformers`` ``GradientCheckpointingLayer``: the language model's decoder layers
and the vision tower's blocks (``LlamaDecoderLayer`` + ``CLIPEncoderLayer`` for LLaVA-1.5,
``Qwen2VLDecoderLayer`` + ``Qwen2VLVisionBlock`` for Qwen2-VL, ``Qwen2_5_VLDecoderLayer`` +
``Qwen2_5_VLVisionBlock`` for Qwen2.5-VL).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn


def blocks(model: nn.Module) -> Iterator[nn.Module]:
    """Every transformer block inside ``model``."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            yield module


def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The block classes of a model, e.g. ``{LlamaDecoderLayer, CLIPEncoderLayer}`` for LLaVA.

    A backbone answers with the blocks its family declares (``Backbone.blocks``, which fails
    loudly when none is found); another module with its ``GradientCheckpointingLayer`` s.
    """
    declared = getattr(model, "blocks", None)
    if callable(declared):
        return {type(module) for module in declared()}
    return {type(module) for module in blocks(model)}


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Switch non-reentrant gradient checkpointing of a ``transformers`` model on or off.

    Non-reentrant checkpointing needs no input that requires grad, so it works on a frozen
    model whose only trainable tensors are a pixel prompt or LoRA; the hook ``transformers``
    adds to make the embeddings' output require grad is removed again.
    """
    if not enabled:
        if checkpointing_blocks(model):
            if hasattr(model, "activation_checkpointing_disable"):
                model.activation_checkpointing_disable()
            else:
                model.gradient_checkpointing_disable()
        return
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(model, "_require_grads_hook"):
        model.disable_input_require_grads()


def checkpointing_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks that recompute their activations in the backward pass."""
    return [block for block in blocks(model) if getattr(block, "gradient_checkpointing", False)]


def fsdp_wrap_targets(root: nn.Module, classes: set[type[nn.Module]]) -> set[nn.Module]:
    """The modules FSDP wraps as units: every block, and every largest subtree whose parameters
    all require grad (a prompt, a prompter, each LoRA ``lora_A`` / ``lora_B``).

    Trainable and frozen parameters so never share a unit, nor do fp32 adapters and bf16 weights.

    Args:
        root: The module FSDP wraps (the LightningModule).
        classes: Block classes (:func:`block_classes`).
    """
    targets: set[nn.Module] = set()

    def visit(module: nn.Module, is_root: bool) -> None:
        params = list(module.parameters())
        if not is_root and params and all(p.requires_grad for p in params):
            targets.add(module)
            return
        if not is_root and isinstance(module, tuple(classes)) and params:
            targets.add(module)
        for child in module.children():
            visit(child, False)

    visit(root, True)
    return targets


def fsdp_wrap_policy(root: nn.Module, classes: set[type[nn.Module]] | None = None):
    """An FSDP ``auto_wrap_policy`` wrapping :func:`fsdp_wrap_targets` of ``root``.

    Args:
        root: The module FSDP wraps; its trainable parameters must be set (the current phase).
        classes: Block classes; default every block found in ``root``.
    """
    from torch.distributed.fsdp.wrap import CustomPolicy

    targets = fsdp_wrap_targets(root, classes if classes is not None else block_classes(root))
    ids = {id(module) for module in targets}
    return CustomPolicy(lambda module: id(module) in ids)
