"""The attention call every mPLUG-Owl2 layer makes: ``transformers``' attention function of the
configured implementation (eager where it has none), as its LLaMA layers call it."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward


def attend(
    module: nn.Module,
    implementation: str,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float,
    **kwargs,
) -> torch.Tensor:
    """Attention of ``[B, heads, L, d]`` tensors -> ``[B, L, heads * d]``.

    Args:
        module: The attention layer (its ``scaling``, ``num_key_value_groups``, ``is_causal``
            and ``training`` are read).
        implementation: ``sdpa`` or ``eager`` (``config._attn_implementation``).
        query: The queries.
        key: The keys.
        value: The values.
        mask: Additive or boolean attention mask, or None.
        dropout: Attention dropout while training (none in eval mode).
        **kwargs: Passed on to the attention function (``is_causal``, ...).
    """
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    out, _ = interface(
        module,
        query,
        key,
        value,
        mask,
        dropout=dropout if module.training else 0.0,
        scaling=module.scaling,
        **kwargs,
    )
    return out.reshape(*out.shape[:2], -1)
