"""``method=probe``, written against the method registry only (iqa_lightning/methods/probe.py
and conf/method/probe.yaml, no driver edit): a head on the frozen backbone's pooled vision
features trains through train.py's code path, beats its untrained head on photographs the
model never saw, and rebuilds from its run folder through the public API."""

import csv
from pathlib import Path

import pytest
import torch

from iqa_lightning.methods import method, method_name
from iqa_lightning.methods.probe import ProbeScorer
from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.score import WordScore
from tests.training import train_in_process


def test_the_probe_reads_vision_features_and_never_runs_the_language_model():
    backbone = build_tiny_llava()
    scorer = ProbeScorer(backbone, NoPrompt(), WordScore(["good", "bad"], [1, 0]), hidden=8)
    calls = []
    handle = backbone.language_model().register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        scores = scorer(torch.rand(3, 3, backbone.image_size, backbone.image_size))
    finally:
        handle.remove()
    assert scores.shape == (3,) and not calls
    assert set(scorer.parameter_groups()) == {"head"}
    features = scorer.features(torch.rand(2, 3, backbone.image_size, backbone.image_size))
    assert features.shape == (2, backbone.vision_feature_dim)


def test_the_registry_names_every_method_and_refuses_unknown_ones():
    assert method("probe").name == "probe" and method("word_score").name == "word_score"
    with pytest.raises(ValueError, match=r"method.name='nope' is not a method; known: .*probe, rali"):
        method("nope")
    # A run folder written before the method group existed: RALI named by its stage.
    assert method_name({"stage": {"scorer": "rali"}}) == "rali"
    assert method_name({"stage": {"name": "2"}}) == "word_score"


def test_probe_learns_on_the_demo_and_rebuilds_from_its_run_folder(tmp_path, cache_dir):
    from iqa_lightning.runs import load_run_config
    from iqa_lightning.scorer import Scorer

    metrics = train_in_process(
        ["method=probe", "experiment=demo", "trainer.max_epochs=3",
         "+trainer.limit_train_batches=12"],
        tmp_path, cache_dir,
    )  # fmt: skip
    # The untrained head is the zero-shot; the trained one must rank unseen photographs better.
    assert metrics["test/srcc"] > max(metrics["zeroshot/srcc"], 0.0) + 0.2, metrics
    # Rebuilt through the public API, it scores as the run recorded.
    with open(tmp_path / "predictions_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:6]
    root = Path(load_run_config(tmp_path).dataset.root)
    scorer = Scorer.from_run(tmp_path)
    assert list(scorer.module.parameter_groups()) == ["head"]
    got = scorer([root / row["image_id"] for row in rows]).tolist()
    assert got == pytest.approx([float(row["score"]) for row in rows], abs=1e-5)
