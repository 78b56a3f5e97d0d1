"""Scoring with RALI's LLM-free scorer: ``python -m iqa_lightning.score scorer=rali`` (composed
in process) and ``Scorer.from_rali`` on RALI's release and on a saved scorer folder."""

import csv
import json
from pathlib import Path

import pytest

from iqa_lightning.cli import ConfigError
from iqa_lightning.scorer import Scorer, compose_scoring

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "rali_tiny"
REFERENCE = json.loads((FIXTURE / "reference_scores.json").read_text())["score_image"]


def test_cli_scores_the_release_as_the_reference_does(tmp_path):
    from iqa_lightning.score import score

    out = tmp_path / "scores.csv"
    cfg = compose_scoring([
        "scorer=rali", f"scorer.pretrained={FIXTURE}", f"images={FIXTURE / 'images'}",
        f"out={out}", "trainer=cpu", "num_workers=0", f"trainer.default_root_dir={tmp_path}",
    ])  # fmt: skip
    score(cfg)
    with out.open() as f:
        rows = {r["image"]: float(r["score"]) for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(REFERENCE)
    for name, value in REFERENCE.items():  # wide.png: short side resized, centre-cropped
        assert rows[name] == pytest.approx(value, abs=1e-5)


def test_python_entry_point_reads_a_saved_folder_and_errors_are_one_line(tmp_path):
    from iqa_lightning.models.rali import RALIScorer
    from iqa_lightning.score import build_scorer

    RALIScorer.from_published(FIXTURE).save(tmp_path / "scorer", {"source": "rali_tiny"})
    scorer = Scorer.from_rali(tmp_path / "scorer", accelerator="cpu")
    images = sorted((FIXTURE / "images").iterdir())
    scores = scorer(images)
    expected = [REFERENCE[p.name] for p in images]
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)
    cfg = compose_scoring(["scorer=rali", "images=x", "trainer=cpu"])
    with pytest.raises(ConfigError, match="scorer=rali needs scorer.pretrained"):
        build_scorer(cfg)
    cfg = compose_scoring(["scorer=rali", f"scorer.pretrained={tmp_path}", "images=x"])
    with pytest.raises(FileNotFoundError, match="neither a RALI scorer folder"):
        build_scorer(cfg)
