"""RALI distillation steps on real tiny models: windowed text embeddings, the scorer export."""

import torch

from iqa_lightning.distill.build import load_embeddings, save_embeddings
from iqa_lightning.models.rali.clip import build_tiny_clip
from iqa_lightning.models.rali.scorer import RALIScorer
from iqa_lightning.models.rali.text import TextEmbedder


def test_windowed_embedding_equals_clip_for_short_texts_and_averages_long_ones():
    encoder = build_tiny_clip()
    embedder = TextEmbedder.from_encoder(encoder)
    texts = ["The image is blurry!", "sharp and clear, no noise"]
    tokens = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    plain = encoder.model.get_text_features(**tokens)
    plain = plain if torch.is_tensor(plain) else plain.pooler_output
    assert torch.allclose(embedder(texts), plain, atol=1e-5)

    long = "noisy " * 100  # more than one 77-token window
    windows = embedder.windows(long)
    assert len(windows) > 1 and all(len(w) <= 77 for w in windows)
    chunks = embedder.embed_windows(windows)
    direction = torch.nn.functional.normalize(
        (chunks / chunks.norm(dim=1, keepdim=True)).mean(0), dim=0
    )
    expected = direction * chunks.norm(dim=1).mean()
    assert torch.allclose(embedder([long])[0], expected, atol=1e-5)


def test_export_load_round_trip_and_embedding_file(tmp_path):
    encoder = build_tiny_clip()
    torch.manual_seed(0)
    scorer = RALIScorer(
        encoder.model,
        torch.randn(24),
        torch.rand(24) + 0.5,
        torch.linalg.qr(torch.randn(24, 8))[0].T,
        torch.randn(5, 8),
        torch.rand(5),
        image_size=encoder.image_size,
    )
    scorer.save(tmp_path / "scorer", {"teacher": "tiny"})
    loaded = RALIScorer.load(tmp_path / "scorer")
    pixels = torch.rand(3, 3, encoder.image_size, encoder.image_size)
    assert torch.allclose(scorer(pixels), loaded(pixels), atol=1e-6)
    save_embeddings(tmp_path / "e.safetensors", torch.eye(3), ["a", "b", "c"])
    tensor, ids = load_embeddings(tmp_path / "e.safetensors")
    assert ids == ["a", "b", "c"] and torch.equal(tensor, torch.eye(3))
