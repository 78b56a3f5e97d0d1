"""RALI distillation parts: the teacher-text cache, PCA, bucketed basis, contrastive loss."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from iqa_lightning.distill.texts import TextCache, TextFileError, check_texts, read_texts
from iqa_lightning.models.rali.basis import allocate, bucket_of, bucketed_basis, kmeans
from iqa_lightning.models.rali.contrastive import info_nce
from iqa_lightning.models.rali.pca_fit import fit_pca, identity_pca


# ------------------------------------------------------------------ text cache
def test_cache_resumes_and_never_duplicates(tmp_path):
    path = tmp_path / "texts.jsonl"
    cache = TextCache(path)
    assert cache.add({"a": "blurry and dark", "b": "sharp"}) == 2
    assert cache.add({"b": "other text", "c": ""}) == 1  # b is cached; an empty answer is kept
    again = TextCache(path)
    assert again.texts == {"a": "blurry and dark", "b": "sharp", "c": ""}
    assert again.missing(["a", "d", "c", "e"]) == ["d", "e"]
    assert again.add({"a": "x", "d": "noisy"}) == 1
    lines = path.read_text().splitlines()
    assert [json.loads(x)["image_id"] for x in lines] == ["a", "b", "c", "d"]


def test_cache_drops_a_torn_last_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "texts.jsonl"
    TextCache(path).add({"a": "one", "b": "two"})
    with open(path, "ab") as f:  # a writer killed mid-line
        f.write(b'{"image_id": "c", "te')
    cache = TextCache(path)
    assert sorted(cache.texts) == ["a", "b"]
    cache.add({"c": "three"})
    assert read_texts(path) == {"a": "one", "b": "two", "c": "three"}


def test_cache_flush_is_one_write_with_fsync(tmp_path, monkeypatch):
    calls = []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(os, "write", lambda fd, b: calls.append("write") or real_write(fd, b))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    TextCache(tmp_path / "t.jsonl").add({str(i): f"text {i}" for i in range(5)})
    assert calls == ["write", "fsync"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "texts.jsonl:2: not a JSON object"),
        ('["a", "b"]', "texts.jsonl:2: expected a JSON object, got list"),
        ('{"text": "x"}', "texts.jsonl:2: no string 'image_id'"),
        ('{"image_id": "b", "text": "  "}', "texts.jsonl:2: image 'b' has no text"),
        ('{"image_id": "a", "text": "again"}', "texts.jsonl:2: image 'a' is listed twice"),
    ],
)
def test_read_texts_names_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"image_id": "a", "text": "fine"}\n' + line + "\n")
    with pytest.raises(TextFileError, match=message):
        read_texts(path)


def test_check_texts_names_missing_images():
    with pytest.raises(TextFileError, match=r"t.jsonl: 2 of 3 training images have no text"):
        check_texts({"a": "x"}, ["a", "b", "c"], "t.jsonl")


# ------------------------------------------------------------------------- PCA
def test_pca_standardises_then_projects_on_the_leading_axes():
    torch.manual_seed(0)
    x = torch.randn(200, 6) @ torch.randn(6, 6) * 3 + 7
    fit = fit_pca(x, 3)
    assert torch.allclose(fit.mean, x.mean(0), atol=1e-4)
    assert torch.allclose(fit.scale, x.var(0, unbiased=False).sqrt(), atol=1e-4)
    assert torch.allclose(fit.components @ fit.components.T, torch.eye(3), atol=1e-5)
    z = (x - fit.mean) / fit.scale
    eigvals, eigvecs = torch.linalg.eigh(torch.cov(z.T.double(), correction=0))
    top = eigvecs[:, -3:].flip(1).T.float()  # the 3 largest, in order
    assert torch.allclose((fit.components * top).sum(1).abs(), torch.ones(3), atol=1e-4)
    projected = fit.transform(x)
    assert torch.allclose(projected.var(0, unbiased=False), eigvals[-3:].flip(0).float(), rtol=1e-3)
    ratio = eigvals[-3:].flip(0) / eigvals.sum()
    assert torch.allclose(fit.explained_variance_ratio, ratio.float(), atol=1e-5)
    largest = fit.components.gather(1, fit.components.abs().argmax(1, keepdim=True))
    assert (largest > 0).all()
    with pytest.raises(ValueError, match=r"PCA dim=7: must be between 1 and min\(N - 1, D\) = 6"):
        fit_pca(x, 7)
    assert torch.equal(identity_pca(4).transform(torch.eye(4)), torch.eye(4))


# ----------------------------------------------------------------------- basis
def test_buckets_are_equal_width_over_the_target_range():
    y = torch.tensor([0.2, 0.2999, 0.3, 0.55, 0.7, 1.0])
    assert bucket_of(y, 4).tolist() == [0, 0, 0, 1, 2, 3]  # width 0.2 from 0.2
    assert bucket_of(torch.full((3,), 0.5), 4).tolist() == [0, 0, 0]


def test_allocation_one_each_then_highest_averages_capped_at_distinct():
    assert allocate([10, 2, 4], [10, 2, 4], 6) == [3, 1, 2]  # 10/1, 10/2, then 4/1 > 10/3
    assert allocate([10, 2, 4], [2, 2, 4], 6) == [
        2,
        2,
        2,
    ]  # capped at 2; tie 2/1 = 4/2 to the lower
    with pytest.raises(ValueError, match="basis size 2 is below the 3 non-empty score buckets"):
        allocate([1, 1, 1], [1, 1, 1], 2)


def test_basis_vectors_and_scores_are_cluster_means():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 5), dim=1)
    z = torch.cat([c + 0.01 * torch.randn(10, 5) for c in centres])
    y = torch.cat([torch.full((10,), v) for v in (0.1, 0.15, 0.8, 0.85)]) + torch.rand(40) * 0.01
    basis = bucketed_basis(z, y, size=4, buckets=2, seed=0)
    assert basis.counts.tolist() == [10, 10, 10, 10]
    assert basis.buckets.tolist() == [0, 0, 1, 1]
    for vector, score in zip(basis.vectors, basis.scores, strict=True):
        members = (torch.cdist(z, vector[None]).squeeze(1) < 0.2).nonzero().flatten()
        assert len(members) == 10
        assert torch.allclose(vector, z[members].mean(0), atol=1e-6)
        assert torch.allclose(score, y[members].mean(), atol=1e-6)
    plain = bucketed_basis(z, y, size=4, buckets=1)
    assert sorted(plain.counts.tolist()) == [10, 10, 10, 10] and set(plain.buckets.tolist()) == {0}


def test_basis_with_fewer_distinct_texts_than_vectors():
    z = F.normalize(torch.eye(3), dim=1).repeat(5, 1)  # 3 distinct texts, 15 images
    basis = bucketed_basis(z, torch.linspace(0, 1, 15), size=10, buckets=1)
    assert len(basis.vectors) == 3 and basis.counts.tolist() == [5, 5, 5]
    centres, assign = kmeans(torch.randn(20, 2), 3, seed=1)
    assert len(centres) == 3 and torch.bincount(assign).min() > 0


# ---------------------------------------------------------------- contrastive
def test_info_nce_is_symmetric_and_falls_when_pairs_align():
    torch.manual_seed(0)
    texts = F.normalize(torch.randn(8, 6), dim=1)
    images = torch.randn(8, 6, requires_grad=True)
    a, t = F.normalize(images.detach(), dim=1), texts
    logits = a @ t.T / 0.07
    by_hand = F.cross_entropy(logits, torch.arange(8)) + F.cross_entropy(logits.T, torch.arange(8))
    assert torch.allclose(info_nce(images.detach(), texts), by_hand / 2)
    optimizer = torch.optim.SGD([images], lr=0.5)
    losses = []
    for _ in range(30):
        loss = info_nce(images, texts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    with pytest.raises(ValueError, match="temperature=0 must be positive"):
        info_nce(images, texts, temperature=0)
