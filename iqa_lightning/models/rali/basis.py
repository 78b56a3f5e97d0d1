"""RALI's basis vectors and their scores (arXiv 2510.11369), built from teacher texts.

The scorer compares an image with ``K`` basis vectors in the PCA space and returns the
softmax-weighted mean of their scores. :func:`bucketed_basis` builds them from the training
images' projected text embeddings ``z_i`` (standardised, PCA-projected, L2-normalised) and
their targets ``y_i`` in [0, 1] (the paper: 240 score buckets, K = 250). The reference publishes
no training code; the rule here, exactly:

1. Buckets: ``B`` equal-width intervals over ``[min y, max y]``; image ``i`` goes to bucket
   ``min(floor(B (y_i - min y) / (max y - min y)), B - 1)`` (all in bucket 0 when every
   ``y`` is equal). Empty buckets are dropped; ``M`` remain.
2. Allocation: each remaining bucket gets one vector, the other ``K - M`` go one at a time to
   the bucket with the most images per vector (``n_b / k_b``, highest averages; ties to the
   lower bucket), never more vectors than the bucket has distinct ``z``.
3. In each bucket, k-means with ``k_b`` clusters on its ``z``: k-means++ seeding (generator
   seeded with ``seed + bucket``), then Lloyd's iterations (squared Euclidean distance) until
   no assignment changes or ``iterations`` pass; a cluster left empty takes the point farthest
   from its centre (the farthest points, one per empty cluster).
4. Each cluster gives one vector, the mean of its members' ``z``, and one score, the mean of
   their ``y`` (the scorer normalises the vectors before the cosine).

``B = 1`` is plain k-means (the "no buckets" ablation). :func:`random_basis` is the reference's
initialisation without a basis file: ``randn * 0.02`` vectors, scores uniform in [0.3, 0.7].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Basis", "allocate", "bucket_of", "bucketed_basis", "kmeans", "random_basis"]


@dataclass
class Basis:
    """Basis vectors with their scores.

    Attributes:
        vectors: ``[K, d]``.
        scores: ``[K]``.
        counts: ``[K]`` members of each cluster (0 for a random basis).
        buckets: ``[K]`` bucket of each vector.
    """

    vectors: torch.Tensor
    scores: torch.Tensor
    counts: torch.Tensor
    buckets: torch.Tensor


def bucket_of(targets: torch.Tensor, buckets: int) -> torch.Tensor:
    """Each target's equal-width bucket over ``[min, max]`` (step 1 of the module docstring)."""
    lo, hi = targets.min(), targets.max()
    if hi <= lo:
        return torch.zeros_like(targets, dtype=torch.long)
    index = torch.floor(buckets * (targets - lo) / (hi - lo)).long()
    return index.clamp(0, buckets - 1)


def allocate(sizes: list[int], distinct: list[int], total: int) -> list[int]:
    """Vectors per bucket: one each, the rest by highest averages (step 2), capped at
    ``distinct``.

    Raises:
        ValueError: ``total`` below the number of buckets.
    """
    if total < len(sizes):
        raise ValueError(
            f"basis size {total} is below the {len(sizes)} non-empty score buckets: raise "
            "stage.basis.size or lower stage.basis.buckets"
        )
    counts = [1] * len(sizes)
    for _ in range(total - len(sizes)):
        open_ = [b for b in range(len(sizes)) if counts[b] < distinct[b]]
        if not open_:
            break
        best = max(open_, key=lambda b: (sizes[b] / counts[b], -b))
        counts[best] += 1
    return counts


def _kmeans_pp(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    first = torch.randint(len(points), (1,), generator=generator)
    centres = [points[first[0]]]
    dist = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        if float(dist.sum()) <= 0:
            break
        pick = torch.multinomial(dist / dist.sum(), 1, generator=generator)[0]
        centres.append(points[pick])
        dist = torch.minimum(dist, ((points - points[pick]) ** 2).sum(1))
    return torch.stack(centres)


def kmeans(
    points: torch.Tensor, k: int, seed: int = 0, iterations: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ then Lloyd's iterations (step 3).

    Args:
        points: ``[n, d]``.
        k: Clusters (at most the distinct points; fewer come back when there are fewer).
        seed: Seed of the k-means++ draws.
        iterations: Most Lloyd's iterations.

    Returns:
        ``[k', d]`` centres (member means) and ``[n]`` assignments.
    """
    generator = torch.Generator().manual_seed(int(seed))
    points = points.double()
    centres = _kmeans_pp(points, k, generator)
    assign = torch.full((len(points),), -1, dtype=torch.long)
    for _ in range(iterations):
        new = torch.cdist(points, centres).argmin(1)
        empty = torch.nonzero(torch.bincount(new, minlength=len(centres)) == 0).flatten()
        if len(empty):  # the farthest points, one each, re-seed the empty clusters
            far = ((points - centres[new]) ** 2).sum(1).argsort(descending=True)
            new[far[: len(empty)]] = empty
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        n = torch.bincount(assign, minlength=len(centres)).unsqueeze(1)
        centres = torch.where(n > 0, sums / n.clamp(min=1), centres)
    return centres, assign


def bucketed_basis(
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    size: int = 250,
    buckets: int = 240,
    seed: int = 0,
    iterations: int = 100,
) -> Basis:
    """Basis vectors and scores by bucketed k-means (module docstring).

    Args:
        embeddings: ``[N, d]`` projected, L2-normalised text embeddings.
        targets: ``[N]`` targets in [0, 1].
        size: ``K``, the number of vectors (fewer when the data has fewer distinct points).
        buckets: ``B``, score buckets; 1 for plain k-means.
        seed: Seed of the k-means++ draws (bucket ``b`` uses ``seed + b``).
        iterations: Most Lloyd's iterations per bucket.

    Raises:
        ValueError: No embeddings, mismatched lengths, or ``size`` / ``buckets`` below 1.
    """
    if size < 1 or buckets < 1:
        raise ValueError(f"basis size={size} and buckets={buckets} must both be 1 or more")
    if len(embeddings) == 0 or len(embeddings) != len(targets):
        raise ValueError(
            f"basis: {len(embeddings)} embeddings for {len(targets)} targets (need the same, >0)"
        )
    z, y = embeddings.detach().double().cpu(), targets.detach().double().cpu()
    bucket = bucket_of(y, buckets)
    present = torch.unique(bucket).tolist()
    members = [torch.nonzero(bucket == b).flatten() for b in present]
    distinct = [len(torch.unique(z[m], dim=0)) for m in members]
    counts = allocate([len(m) for m in members], distinct, size)
    vectors, scores, sizes, owners = [], [], [], []
    for b, m, k in zip(present, members, counts, strict=True):
        centres, assign = kmeans(z[m], k, seed=seed + b, iterations=iterations)
        for c in range(len(centres)):
            inside = assign == c
            if not inside.any():
                continue
            vectors.append(z[m][inside].mean(0))
            scores.append(y[m][inside].mean())
            sizes.append(int(inside.sum()))
            owners.append(b)
    return Basis(
        torch.stack(vectors).float(),
        torch.stack(scores).float(),
        torch.tensor(sizes),
        torch.tensor(owners),
    )


def random_basis(size: int, dim: int, seed: int = 0) -> Basis:
    """The reference's initialisation without a basis: ``randn * 0.02``, scores U(0.3, 0.7)."""
    generator = torch.Generator().manual_seed(int(seed))
    vectors = torch.randn(size, dim, generator=generator) * 0.02
    scores = torch.rand(size, generator=generator) * 0.4 + 0.3
    return Basis(vectors, scores, torch.zeros(size, dtype=torch.long), torch.zeros(size).long())
