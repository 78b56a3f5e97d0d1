"""RALI's projected image embeddings spread over the texts' PCA space on the trained tiny CLIP
(the encoder was trained contrastively with the images' descriptions), where the random tiny
CLIP's all point one way (its image features sit far from the texts' centre): the collapse the
random demo showed, and what fixes it."""

import numpy as np
import torch
import torch.nn.functional as F

from iqa_lightning.models.rali.clip import build_tiny_clip
from iqa_lightning.models.rali.pca_fit import fit_pca
from iqa_lightning.models.rali.scorer import RALIScorer
from iqa_lightning.models.rali.text import TextEmbedder
from iqa_lightning.tiny.pretrain import clip_description
from iqa_lightning.tiny.trained import load_tiny_clip
from iqa_lightning.tiny.world import HELD_OUT_PHOTOS, random_scene, render


def mean_pairwise_cosine(embedded: torch.Tensor) -> float:
    unit = F.normalize(embedded, dim=-1)
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * (n - 1)))


def projected_spread(encoder) -> float:
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng, list(HELD_OUT_PHOTOS)) for _ in range(48)]
    pixels = torch.stack(
        [torch.from_numpy(np.array(render(s, 64))).permute(2, 0, 1).float() / 255 for s in scenes]
    )
    with torch.no_grad():
        texts = TextEmbedder.from_encoder(encoder)([clip_description(s) for s in scenes])
        pca = fit_pca(texts, 16)
        scorer = RALIScorer(
            encoder.model, pca.mean, pca.scale, pca.components, torch.randn(4, 16), torch.rand(4),
            image_size=64, image_mean=encoder.image_mean, image_std=encoder.image_std,
        )  # fmt: skip
        return mean_pairwise_cosine(scorer.embed(pixels))


def test_trained_clip_spreads_projected_images():
    assert projected_spread(load_tiny_clip()) < 0.8


def test_random_clip_collapses_them():
    encoder = build_tiny_clip(image_size=64, hidden_size=64, projection_dim=48, num_layers=3)
    assert projected_spread(encoder) > 0.9
