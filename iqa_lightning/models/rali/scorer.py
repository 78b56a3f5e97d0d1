"""RALI's LLM-free quality scorer (arXiv 2510.11369, https://arxiv.org/abs/2510.11369).

"Reasoning as Representation" aligns a CLIP image encoder to the text representations of a
reasoning IQA model and scores with no language model at all::

    pixels [B,3,R,R] in [0,1] -> normalise (CLIP mean/std) -> CLIP image tower + projection
    -> features x [B,D] -> (x - pca_mean) / |pca_scale| -> @ pca_components.T [B,d]
    -> L2-normalise -> cosine similarity to the K L2-normalised basis vectors [B,K]
    -> softmax(similarity / tau) -> @ basis_scores -> score [B] (fp32)

``pca_scale`` is sqrt of the per-feature variance; ``tau`` is 0.07 in the paper, and RALI's
checkpoint stores it as ``logit_scale = 1 / tau``. The PCA is frozen (buffers); the basis vectors
and their scores are parameters, and so is the encoder. The same map applies to CLIP TEXT
embeddings (:meth:`RALIScorer.project`), which is how distillation aligns the two.

Interface::

    RALIScorer(vision, pca_mean, pca_scale, pca_components, basis, basis_scores, tau=0.07,
               image_size=None, image_mean=CLIP_MEAN, image_std=CLIP_STD,
               score_range=(0.0, 1.0), use_pca=True)
    scorer(pixels) -> [B]                 scorer.distribution(pixels) -> [B, K]
    scorer.image_features(pixels) -> [B, D]   scorer.embed(pixels) -> [B, d]
    scorer.project(features [N, D]) -> [N, d]  scorer.parameter_groups()
    scorer.save(folder, provenance)       RALIScorer.load(folder)
    RALIScorer.from_published(folder) or (ckpt=, pca=, basis=, clip=)
    load_scorer(folder)                   either format (``conf/scorer/rali.yaml``)

A saved folder holds ``model.safetensors`` (encoder, PCA and basis tensors by their names here)
and ``scorer.json`` (tau, score range, image size and statistics, the CLIP vision config,
provenance). :meth:`RALIScorer.from_published` reads RALI's own release (``ckpt.pt``,
``pca.pkl``, ``basis.npz``, a CLIP folder); see :mod:`~iqa_lightning.models.rali.published`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqa_lightning.errors import ConfigError
from iqa_lightning.files import save_tensors
from iqa_lightning.models.rali.clip import CLIP_MEAN, CLIP_STD, vision_tower
from iqa_lightning.models.rali.published import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    PUBLISHED_FILES,
    WEIGHTS_FILE,
    read_published,
    read_saved,
)

GROUPS = ("encoder", "basis", "basis_scores")


def _tensor(value: Any, name: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"RALIScorer: {name} is required")
    return torch.as_tensor(value).detach().clone().to(torch.float32)


class RALIScorer(nn.Module):
    """Quality scores from a CLIP image encoder, a frozen PCA and K scored basis vectors.

    Satisfies :class:`~iqa_lightning.models.scorer.QualityScorer` (``tasks = {"score"}``).

    Args:
        vision: A ``CLIPVisionModelWithProjection``, or a ``CLIPModel`` whose image tower and
            projection are used (shared, not copied).
        pca_mean: ``[D]`` mean of the PCA's training features (frozen).
        pca_scale: ``[D]`` per-feature scale, sqrt of the variance (frozen; ``|.|`` is used).
        pca_components: ``[d, D]`` principal axes (frozen).
        basis: ``[K, d]`` basis vectors (normalised when used; ``[K, D]`` without PCA).
        basis_scores: ``[K]`` score of each basis vector.
        tau: Softmax temperature on the cosine similarities.
        image_size: Input side in pixels (default: the vision config's).
        image_mean: Per-channel mean the pixels are normalised with.
        image_std: Per-channel standard deviation.
        score_range: ``(lo, hi)``: the units of ``basis_scores``, and so of every score (a
            convex combination of them); [0, 1] for a scorer trained on this package's targets.
        use_pca: False: the features are only L2-normalised (the no-PCA ablation); the PCA
            arguments may then be None.
    """

    tasks = frozenset({"score"})

    def __init__(
        self,
        vision: nn.Module,
        pca_mean: Any,
        pca_scale: Any,
        pca_components: Any,
        basis: Any,
        basis_scores: Any,
        tau: float = 0.07,
        image_size: int | None = None,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        score_range: Sequence[float] = (0.0, 1.0),
        use_pca: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = vision_tower(vision)
        config = self.encoder.config
        dim = int(config.projection_dim)
        self.use_pca = bool(use_pca)
        if self.use_pca:
            mean, scale = _tensor(pca_mean, "pca_mean"), _tensor(pca_scale, "pca_scale")
            components = _tensor(pca_components, "pca_components")
        else:
            mean, scale, components = torch.zeros(dim), torch.ones(dim), torch.eye(dim)
        for name, value, shape in (("pca_mean", mean, (dim,)), ("pca_scale", scale, (dim,))):
            if tuple(value.shape) != shape:
                raise ValueError(f"RALIScorer: {name} has shape {tuple(value.shape)}, not {shape}")
        if components.ndim != 2 or components.shape[1] != dim:
            raise ValueError(
                f"RALIScorer: pca_components has shape {tuple(components.shape)}, not [d, {dim}] "
                f"(the encoder's projection_dim is {dim})"
            )
        basis, basis_scores = _tensor(basis, "basis"), _tensor(basis_scores, "basis_scores")
        out_dim = components.shape[0]
        if basis.ndim != 2 or basis.shape[1] != out_dim:
            raise ValueError(
                f"RALIScorer: basis has shape {tuple(basis.shape)}, not [K, {out_dim}]"
            )
        if tuple(basis_scores.shape) != (basis.shape[0],):
            raise ValueError(
                f"RALIScorer: basis_scores has shape {tuple(basis_scores.shape)}, not "
                f"[{basis.shape[0]}] (one score per basis vector)"
            )
        if not float(tau) > 0:
            raise ValueError(f"RALIScorer: tau={tau} must be positive")
        lo, hi = (float(x) for x in score_range)
        if not lo < hi:
            raise ValueError(f"RALIScorer: score_range={list(score_range)} needs lo < hi")
        self.register_buffer("pca_mean", mean)
        self.register_buffer("pca_scale", scale)
        self.register_buffer("pca_components", components)
        self.basis = nn.Parameter(basis)
        self.basis_scores = nn.Parameter(basis_scores)
        self.tau = float(tau)
        self.score_range = (lo, hi)
        self.image_size = int(image_size or config.image_size)
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        stats = torch.tensor([self.image_mean, self.image_std]).view(2, 1, 3, 1, 1)
        self.register_buffer("_mean", stats[0], persistent=False)
        self.register_buffer("_std", stats[1], persistent=False)

    # ------------------------------------------------------------------ shapes
    @property
    def feature_dim(self) -> int:
        """D: the size of the CLIP embedding."""
        return int(self.pca_mean.shape[0])

    @property
    def embed_dim(self) -> int:
        """d: the size after the PCA."""
        return int(self.pca_components.shape[0])

    @property
    def num_basis(self) -> int:
        """K: the number of basis vectors."""
        return int(self.basis.shape[0])

    # ----------------------------------------------------------------- forward
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` fp32 CLIP image embeddings of ``[B, 3, R, R]`` pixels in [0, 1]."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"RALIScorer: pixels must be [B, 3, R, R], got {tuple(pixels.shape)}")
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"RALIScorer: pixels are {tuple(pixels.shape[-2:])}, the encoder takes "
                f"{self.image_size}x{self.image_size}"
            )
        x = (pixels.float() - self._mean) / self._std
        dtype = self.encoder.visual_projection.weight.dtype
        return self.encoder(pixel_values=x.to(dtype)).image_embeds.float()

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, d]``: standardised, PCA-projected, L2-normalised ``[N, D]`` features (image or
        text embeddings alike)."""
        x = features.float()
        if self.use_pca:
            x = (x - self.pca_mean) / self.pca_scale.abs()
            x = x @ self.pca_components.T
        return F.normalize(x, dim=-1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` projected image embeddings (:meth:`project` of :meth:`image_features`)."""
        return self.project(self.image_features(pixels))

    def weights(self, embedded: torch.Tensor) -> torch.Tensor:
        """``[N, K]`` softmax over the cosine similarities of projected embeddings to the basis."""
        similarity = embedded @ F.normalize(self.basis.float(), dim=-1).T
        return F.softmax(similarity / self.tau, dim=-1)

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """``[N]`` scores of ``[N, D]`` CLIP embeddings."""
        return self.weights(self.project(features)) @ self.basis_scores.float()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Quality scores ``[B]`` (fp32, in :attr:`score_range`) of pixels in [0, 1]."""
        with torch.autocast(pixels.device.type, enabled=False):
            features = self.image_features(pixels)
            return self.weights(self.project(features)) @ self.basis_scores.float()

    def distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` fp32 weights of the basis vectors (each row sums to 1)."""
        with torch.autocast(pixels.device.type, enabled=False):
            return self.weights(self.embed(pixels))

    # -------------------------------------------------------------- parameters
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """``encoder`` (the CLIP image tower), ``basis`` and ``basis_scores``, by name here."""
        return {
            "encoder": {f"encoder.{n}": p for n, p in self.encoder.named_parameters()},
            "basis": {"basis": self.basis},
            "basis_scores": {"basis_scores": self.basis_scores},
        }

    # ------------------------------------------------------------------- files
    def settings(self) -> dict[str, Any]:
        """What ``scorer.json`` records besides provenance."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tau": self.tau,
            "score_range": list(self.score_range),
            "image_size": self.image_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "use_pca": self.use_pca,
            "feature_dim": self.feature_dim,
            "embed_dim": self.embed_dim,
            "num_basis": self.num_basis,
            "clip_vision_config": self.encoder.config.to_dict(),
        }

    def save(self, folder: str | Path, provenance: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``scorer.json`` into ``folder`` (created).

        Args:
            folder: The scorer folder.
            provenance: JSON-serialisable facts about its origin (teacher, data, run, ...).

        Returns:
            The folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_tensors(tensors, folder / WEIGHTS_FILE, metadata={"format": FORMAT})
        info = {**self.settings(), "provenance": dict(provenance or {})}
        (folder / CONFIG_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, dtype: str = "float32") -> RALIScorer:
        """A scorer saved by :meth:`save`.

        Args:
            folder: The scorer folder.
            dtype: The encoder's dtype (``float32``, ``bfloat16``, ``float16``); the PCA and
                basis stay fp32.

        Raises:
            FileNotFoundError: A file of the folder is missing.
            ConfigError: ``scorer.json`` is not this format, or a tensor is missing / unknown.
        """
        return read_saved(cls, Path(folder), dtype)

    @classmethod
    def from_published(
        cls,
        folder: str | Path | None = None,
        *,
        ckpt: str | Path | None = None,
        pca: str | Path | None = None,
        basis: str | Path | None = None,
        clip: str | Path | None = None,
        score_range: Sequence[float] = (0.0, 1.0),
        dtype: str = "float32",
    ) -> RALIScorer:
        """RALI's released files: ``ckpt.pt``, ``pca.pkl``, ``basis.npz`` and a CLIP folder.

        Args:
            folder: Where they are (RALI's ``checkpoints/`` layout: the CLIP folder is
                ``best/``); a path given by keyword overrides the folder's.
            ckpt: ``ckpt.pt`` (``{"state_dict": ...}``, read with ``weights_only=True``).
            pca: ``pca.pkl`` (a joblib-pickled scikit-learn PCA, read by a restricted unpickler).
            basis: ``basis.npz`` (``vectors`` ``[K, d]``, ``scores`` ``[K]``).
            clip: The CLIP folder (``config.json``, ``preprocessor_config.json``).
            score_range: The units of the basis scores (RALI's: normalised MOS, [0, 1]).
            dtype: The encoder's dtype.
        """
        kwargs = read_published(folder, ckpt=ckpt, pca=pca, basis=basis, clip=clip, dtype=dtype)
        return cls(**kwargs, score_range=score_range)


def load_scorer(pretrained: str | Path, dtype: str = "float32", score_range=None):
    """A RALI scorer from a folder of either format: ``scorer.json`` (this package's) or
    ``ckpt.pt`` (RALI's release). The ``_target_`` of ``conf/scorer/rali.yaml``.

    Args:
        pretrained: The folder.
        dtype: The encoder's dtype.
        score_range: ``[lo, hi]`` of a release's basis scores (default [0, 1]); a saved
            folder records its own.
    """
    folder = Path(str(pretrained)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"scorer.pretrained={pretrained}: no such folder")
    if (folder / CONFIG_FILE).is_file():
        if score_range is not None:
            raise ConfigError(
                f"scorer.score_range: {folder} records its own score range; leave it null"
            )
        return RALIScorer.load(folder, dtype=dtype)
    if (folder / PUBLISHED_FILES["ckpt"]).is_file():
        kwargs = {"score_range": tuple(score_range)} if score_range is not None else {}
        return RALIScorer.from_published(folder, dtype=dtype, **kwargs).eval()
    raise FileNotFoundError(
        f"scorer.pretrained={pretrained}: neither a RALI scorer folder ({CONFIG_FILE}) nor "
        f"RALI's release ({PUBLISHED_FILES['ckpt']}, {PUBLISHED_FILES['pca']}, ...)"
    )


__all__ = ["CONFIG_FILE", "FORMAT", "GROUPS", "WEIGHTS_FILE", "RALIScorer", "load_scorer"]
