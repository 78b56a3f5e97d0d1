"""The RALI demo end to end (shortened): teach -> embed -> PCA -> basis -> train -> export, and
the run folder contract; ``python train.py`` run in this process."""

import csv
import json

import torch

from iqa_lightning.models.rali.scorer import RALIScorer
from tests.conftest import run_main


def test_rali_demo_distils_and_exports(run_env, tmp_path, capsys):
    out = tmp_path / "run"
    ended = run_main(
        "iqa_lightning.train",
        ["experiment=rali_smoke", "dataset.n_refs=4", "dataset.generated_size=96",
         "trainer.max_epochs=3", "teacher.max_new_tokens=8", "logger=none",
         f"hydra.run.dir={out}"],
        capsys,
        env=run_env,
    )  # fmt: skip
    assert ended.code == 0, ended.text[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test/srcc", "test/plcc", "val/srcc_best"} <= set(metrics)
    summary = json.loads((out / "distill" / "summary.json").read_text())
    texts = (out / "distill" / "teacher_texts.jsonl").read_text().splitlines()
    assert summary["train_images"] == len(texts) and summary["pca_dim"] == 16
    assert (out / "checkpoints" / "align" / "trainable.safetensors").is_file()
    rows = list(csv.DictReader(open(out / "predictions_test.csv")))
    scorer = RALIScorer.load(out / "scorer")
    info = json.loads((out / "scorer" / "scorer.json").read_text())
    assert info["provenance"]["teacher"].endswith("build_tiny_llava")
    assert info["provenance"]["dataset"] == "synthetic" and scorer.embed_dim == 16
    assert len(rows) > 0 and all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    assert torch.isfinite(scorer.basis_scores).all()
