"""The alignment loss of RALI (arXiv 2510.11369): images to their teacher texts.

:func:`info_nce` is the symmetric InfoNCE of CLIP with in-batch negatives: for ``B`` pairs
``(a_i, t_i)`` of L2-normalised embeddings, ``logits = a @ t.T / temperature`` and the loss is
``(CE(logits, arange(B)) + CE(logits.T, arange(B))) / 2``: each image must pick its own text
among the batch's texts, and each text its own image. Under DDP each process uses its own
batch's negatives (no gather across processes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce"]


def info_nce(images: torch.Tensor, texts: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE between ``[B, d]`` image and text embeddings (normalised here).

    Args:
        images: Image embeddings, row ``i`` paired with ``texts[i]``.
        texts: Text embeddings.
        temperature: Softmax temperature of the cosine similarities.

    Raises:
        ValueError: Shapes differ or ``temperature`` is not positive.
    """
    if images.shape != texts.shape:
        raise ValueError(f"info_nce: image {tuple(images.shape)} vs text {tuple(texts.shape)}")
    if temperature <= 0:
        raise ValueError(f"contrastive temperature={temperature} must be positive")
    a = F.normalize(images.float(), dim=-1)
    t = F.normalize(texts.float(), dim=-1)
    logits = a @ t.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
