"""The PCA of RALI's scorer (arXiv 2510.11369), fitted on the teacher's text embeddings.

The published scorer (bytedance/Q-Insight ``src/eval/demo_rali_score.py``, ``pca_transform``)
maps a CLIP feature ``x`` to ``((x - mean) / scale) @ components.T`` with ``mean``, ``scale =
sqrt(var)`` and ``components`` read from its ``pca.pkl`` (``mean_``, ``var_``, ``components_``;
scales below 1e-10 set to 1). :func:`fit_pca` fits those three on text embeddings ``X [N, D]``:

1. ``mean = X.mean(0)``, ``var = X.var(0)`` (population variance, as sklearn's scaler);
   ``scale = sqrt(var)``, set to 1 where below 1e-10;
2. ``Z = (X - mean) / scale`` (standardised; its column means are 0);
3. ``Z = U S V^T`` (``torch.linalg.svd``, thin); ``components = V^T[:d]``, the ``d`` directions
   of largest variance, each signed so that its largest-magnitude entry is positive.

No whitening: components are unit vectors, projections keep their variance (sklearn's
``PCA(whiten=False)``, the default). ``d`` is at most ``min(N - 1, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PCAFit", "fit_pca", "identity_pca"]

MIN_SCALE = 1e-10


@dataclass
class PCAFit:
    """The scorer's PCA tensors (fp32, CPU).

    Attributes:
        mean: ``[D]``.
        scale: ``[D]`` standard deviations.
        components: ``[d, D]`` orthonormal rows.
        explained_variance_ratio: ``[d]`` share of the standardised variance per component.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    components: torch.Tensor
    explained_variance_ratio: torch.Tensor

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``((x - mean) / scale) @ components.T``."""
        return ((x - self.mean) / self.scale) @ self.components.T


def fit_pca(features: torch.Tensor, dim: int) -> PCAFit:
    """Standardise, then keep the ``dim`` leading principal directions (module docstring).

    Args:
        features: ``[N, D]`` text embeddings.
        dim: Output width ``d``.

    Raises:
        ValueError: ``dim`` below 1 or above ``min(N - 1, D)``.
    """
    x = features.detach().to(torch.float64).cpu()
    n, width = x.shape
    top = min(n - 1, width)
    if not 1 <= dim <= top:
        raise ValueError(
            f"PCA dim={dim}: must be between 1 and min(N - 1, D) = {top} for {n} texts of "
            f"width {width}"
        )
    mean = x.mean(0)
    scale = x.var(0, unbiased=False).sqrt()
    scale[scale < MIN_SCALE] = 1.0
    z = (x - mean) / scale
    _, s, vh = torch.linalg.svd(z - z.mean(0), full_matrices=False)
    components = vh[:dim]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    components = components * signs
    variance = s**2
    ratio = variance[:dim] / variance.sum().clamp(min=torch.finfo(torch.float64).tiny)
    return PCAFit(mean.float(), scale.float(), components.float(), ratio.float())


def identity_pca(width: int) -> PCAFit:
    """No PCA (an ablation): mean 0, scale 1, identity components, as the reference's fallback
    when no ``pca.pkl`` is given."""
    return PCAFit(torch.zeros(width), torch.ones(width), torch.eye(width), torch.ones(width))
