"""RALI's LLM-free scorer: golden scores of the reference on its published format, the
precedence of its files, save/load, the restricted PCA unpickler, errors naming the file."""

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_lightning.data.images import array_to_tensor, resize_to_array
from iqa_lightning.models.rali import (
    PCAFileError,
    PublishedFormatError,
    RALIScorer,
    UnsafePickleError,
    build_tiny_clip,
    load_pca,
    load_scorer,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rali_tiny"
REFERENCE = json.loads((FIXTURE / "reference_scores.json").read_text())
NAMES = list(REFERENCE["score_image"])


@pytest.fixture(scope="module")
def published() -> RALIScorer:
    return RALIScorer.from_published(FIXTURE)


def fixture_pixels(size: int = 32) -> torch.Tensor:
    """The fixture images as the datasets load them: short side resized, centre-cropped."""
    images = [Image.open(FIXTURE / "images" / n) for n in NAMES]
    return torch.stack(
        [array_to_tensor(resize_to_array(im, size, resize="short_side_crop")) for im in images]
    )


def release_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "release"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("images", "variants", "*.md"))
    return folder


def test_published_scores_equal_the_reference_scorer(published):
    pixels = fixture_pixels()
    with torch.no_grad():
        scores = published(pixels)
        features = published.image_features(pixels)
        weights = published.distribution(pixels)
    reference = torch.tensor([REFERENCE["score_image"][n] for n in NAMES])
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    torch.testing.assert_close(scores, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        features, torch.tensor([REFERENCE["features"][n] for n in NAMES]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        weights, torch.tensor([REFERENCE["weights"][n] for n in NAMES]), atol=1e-5, rtol=0
    )
    # The scores differ between images by far more than the tolerance.
    assert float(reference.max() - reference.min()) > 0.05


def test_ckpt_values_win_and_the_mean_comes_from_the_pca_file(published):
    state = torch.load(FIXTURE / "ckpt.pt", weights_only=True)["state_dict"]
    pca = load_pca(FIXTURE / "pca.pkl")
    with np.load(FIXTURE / "basis.npz") as basis:
        vectors = torch.from_numpy(basis["vectors"])
    assert published.tau == pytest.approx(0.05) == REFERENCE["tau"]
    torch.testing.assert_close(published.basis.data, state["scorer.prototypes"])
    assert not torch.allclose(published.basis.data, vectors)  # basis.npz lost
    torch.testing.assert_close(published.basis_scores.data, state["scorer.proto_scores"])
    torch.testing.assert_close(published.pca_scale, state["scorer.pca_scale"])
    assert float(published.pca_scale[3]) < 0  # kept as stored; |scale| is used
    torch.testing.assert_close(published.pca_components, state["scorer.pca_components"])
    torch.testing.assert_close(published.pca_mean, torch.from_numpy(pca.mean_).float())
    key = "clip.visual_projection.weight"
    torch.testing.assert_close(published.encoder.visual_projection.weight.data, state[key])


def test_every_pickle_form_of_the_pca_reads_the_same():
    plain = load_pca(FIXTURE / "pca.pkl")
    assert plain.components_.shape == (8, 24) and plain.mean_.dtype == np.float64
    for variant in ("pca_zlib.pkl", "pca_pickle.pkl"):
        other = load_pca(FIXTURE / "variants" / variant)
        np.testing.assert_array_equal(other.mean_, plain.mean_)
        np.testing.assert_array_equal(other.components_, plain.components_)
        np.testing.assert_array_equal(other.explained_variance_, plain.explained_variance_)


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_pickle_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "ran"
    folder = release_copy(tmp_path)
    (folder / "pca.pkl").write_bytes(pickle.dumps({"mean_": _Hostile(marker)}))
    with pytest.raises(
        UnsafePickleError, match=r"pca\.pkl: refused to unpickle global posix\.system"
    ):
        RALIScorer.from_published(folder)
    assert not marker.exists()
    # Hidden inside a zlib-compressed joblib-style stream: refused as well.
    import zlib

    (folder / "pca.pkl").write_bytes(zlib.compress(pickle.dumps(_Hostile(marker))))
    with pytest.raises(UnsafePickleError, match="posix.system"):
        load_pca(folder / "pca.pkl")
    assert not marker.exists()


def test_missing_and_bad_files_are_named(tmp_path):
    folder = release_copy(tmp_path)
    (folder / "pca.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=r"release/pca\.pkl: no such file"):
        RALIScorer.from_published(folder)
    shutil.copy(FIXTURE / "pca.pkl", folder / "pca.pkl")
    (folder / "ckpt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PublishedFormatError, match=r"ckpt\.pt: not a weights-only torch"):
        RALIScorer.from_published(folder)
    (folder / "ckpt.pt").write_bytes(pickle.dumps(_Hostile(tmp_path / "ran")))
    with pytest.raises(PublishedFormatError, match=r"ckpt\.pt: not a weights-only"):
        RALIScorer.from_published(folder)
    assert not (tmp_path / "ran").exists()
    state = torch.load(FIXTURE / "ckpt.pt", weights_only=True)["state_dict"]
    del state["clip.visual_projection.weight"]
    torch.save({"state_dict": state}, folder / "ckpt.pt")
    with pytest.raises(PublishedFormatError, match=r"clip\.visual_projection\.weight"):
        RALIScorer.from_published(folder)
    (folder / "pca.pkl").write_bytes(b"\x80\x05garbage")
    with pytest.raises(PCAFileError, match=r"pca\.pkl: not a readable pickled PCA"):
        load_pca(folder / "pca.pkl")
    np.savez(folder / "basis.npz", vectors=np.zeros((2, 8)))
    from iqa_lightning.models.rali.published import read_basis

    with pytest.raises(PublishedFormatError, match=r"basis\.npz: no \['scores'\] array"):
        read_basis(folder / "basis.npz")


def test_save_load_round_trip_and_load_scorer_reads_both_formats(published, tmp_path):
    folder = published.save(tmp_path / "scorer", {"source": "rali_tiny"})
    info = json.loads((folder / "scorer.json").read_text())
    assert info["tau"] == published.tau and info["score_range"] == [0.0, 1.0]
    assert info["image_size"] == 32 and info["provenance"] == {"source": "rali_tiny"}
    assert info["clip_vision_config"]["projection_dim"] == 24
    loaded = load_scorer(folder)
    ours, theirs = loaded.state_dict(), published.state_dict()
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    pixels = fixture_pixels()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), published(pixels), atol=1e-6, rtol=0)
        torch.testing.assert_close(load_scorer(FIXTURE)(pixels), published(pixels))
    assert loaded.provenance == {"source": "rali_tiny"}
    with pytest.raises(FileNotFoundError, match="neither a RALI scorer folder"):
        load_scorer(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"scorer/model\.safetensors: no such file"):
        RALIScorer.load(folder)


def test_tiny_clip_scorer_maps_images_and_texts_alike_and_trains_only_its_groups():
    clip = build_tiny_clip(seed=3)
    g = torch.Generator().manual_seed(0)
    scorer = RALIScorer(
        clip.model,
        pca_mean=torch.randn(24, generator=g),
        pca_scale=torch.rand(24, generator=g) + 0.5,
        pca_components=torch.randn(6, 24, generator=g),
        basis=torch.randn(5, 6, generator=g),
        basis_scores=torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]),
    )
    pixels = torch.rand(3, 3, 32, 32, generator=g)
    embedded = scorer.embed(pixels)
    assert embedded.shape == (3, 6)
    torch.testing.assert_close(embedded.norm(dim=-1), torch.ones(3))
    # project() is the same map on any [N, D] features: by hand here.
    features = scorer.image_features(pixels)
    by_hand = ((features - scorer.pca_mean) / scorer.pca_scale) @ scorer.pca_components.T
    torch.testing.assert_close(
        scorer.project(features), by_hand / by_hand.norm(dim=-1, keepdim=True)
    )
    weights = scorer.distribution(pixels)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    scores = scorer(pixels)
    torch.testing.assert_close(scores, weights @ scorer.basis_scores)
    assert bool(((scores > 0.1) & (scores < 0.9)).all())
    # The encoder is CLIP's own image tower (shared), the PCA is frozen.
    assert scorer.encoder.vision_model is clip.model.vision_model
    groups = scorer.parameter_groups()
    assert sorted(groups) == ["basis", "basis_scores", "encoder"]
    assert len(groups["encoder"]) == len(list(clip.model.vision_model.parameters())) + 1
    scores.sum().backward()
    assert scorer.basis.grad is not None and scorer.basis_scores.grad is not None
    assert clip.model.visual_projection.weight.grad is not None
    assert all(not b.requires_grad for b in (scorer.pca_mean, scorer.pca_components))


def test_bad_arguments_are_named():
    clip = build_tiny_clip()
    good = dict(pca_mean=torch.zeros(24), pca_scale=torch.ones(24),
                pca_components=torch.eye(24)[:4], basis=torch.ones(3, 4),
                basis_scores=torch.zeros(3))  # fmt: skip
    with pytest.raises(ValueError, match=r"pca_components has shape \(4, 20\)"):
        RALIScorer(clip.model, **{**good, "pca_components": torch.zeros(4, 20)})
    with pytest.raises(ValueError, match=r"basis_scores has shape \(2,\), not \[3\]"):
        RALIScorer(clip.model, **{**good, "basis_scores": torch.zeros(2)})
    with pytest.raises(ValueError, match="tau=0 must be positive"):
        RALIScorer(clip.model, **good, tau=0)
    scorer = RALIScorer(clip.model, **good)
    with pytest.raises(ValueError, match=r"pixels are \(16, 16\), the encoder takes 32x32"):
        scorer(torch.zeros(1, 3, 16, 16))
    no_pca = RALIScorer(clip.model, None, None, None, torch.ones(3, 24), torch.zeros(3),
                        use_pca=False)  # fmt: skip
    assert no_pca.embed_dim == 24
