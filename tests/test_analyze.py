"""Analyses of a run (python -m iqa_lightning.analyze): the logit lens read through the scoring
path, the instability of sampled answers, their files, and the driver on a real run folder."""

import csv
import json
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from iqa_lightning import analyze as driver
from iqa_lightning.analysis import analysis_trainer, collect, instability, logit_lens, run_analysis
from iqa_lightning.cli import ConfigError
from iqa_lightning.models.backbones import build_tiny_llava, build_tiny_qwen2_vl
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.models.prompts.qadapt import QAdaptPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer
from iqa_lightning.module import IQAModule
from tests.conftest import run_train

WORDS = ["excellent", "good", "fair", "poor", "bad"]
WEIGHTS = [1.0, 0.75, 0.5, 0.25, 0.0]


def qalign():
    return WordScore(WORDS, WEIGHTS)


class Images(Dataset):
    def __init__(self, n, size, seed=0):
        self.pixels = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        return {"pixels": self.pixels[i], "image_id": f"img{i:02d}.png"}


@pytest.fixture(scope="module")
def module():
    torch.manual_seed(0)
    backbone = build_tiny_llava(num_layers=3)
    prompt = PaddingPrompt(backbone.image_size, size=8, init_scale=0.5)
    phases = [{"name": "zero_shot", "trainable": []}]
    return IQAModule(backbone, prompt, qalign(), phases=phases).eval()


@pytest.fixture(scope="module")
def images(module):
    return Images(12, module.backbone.image_size)


def loader(images, batch_size=5):
    return DataLoader(images, batch_size=batch_size, shuffle=False)


def qadapt_scorer():
    torch.manual_seed(1)
    backbone = build_tiny_qwen2_vl()
    prompter = QAdaptPrompt(backbone, num_queries=4, hidden_size=32, num_layers=2, num_heads=4,
                            encoder_width=32, max_instruction_tokens=64, gate_hidden=64).eval()  # fmt: skip
    return LMMWordScorer(backbone, prompter, qalign())


# ------------------------------------------------------------------------- logit lens
@pytest.mark.parametrize("family", ["llava_padding", "qwen2_vl_qadapt"])
def test_logit_lens_last_layer_is_the_scorers_own_distribution(family, module):
    scorer = module.scorer if family == "llava_padding" else qadapt_scorer()
    size = scorer.backbone.image_size
    pixels = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = logit_lens.compute(scorer, pixels, {"top_k": 4})
        own = scorer.distribution(pixels)
        full = torch.softmax(scorer.logits(pixels), -1)
    layers = len(scorer.backbone.language_model().layers)
    assert out["renormalised"].shape == (3, layers, len(WORDS))
    assert torch.allclose(out["renormalised"][:, -1], own, atol=1e-5)
    ids = scorer.word_head.token_ids
    assert torch.allclose(out["probability"][:, -1], full[:, ids], atol=1e-5)
    assert torch.allclose(out["top_probs"][:, -1], full.topk(4, -1).values, atol=1e-5)
    for layer in range(layers - 1):
        assert (out["renormalised"][:, layer] - own).abs().max() > 1e-4, "earlier layers differ"
    assert torch.all(out["top_probs"][..., :-1] >= out["top_probs"][..., 1:])
    if scorer.prompter is not None:  # the prompter's feature hook is what the lens reads
        with torch.no_grad():
            bare = scorer.backbone.layer_logits(scorer.prompt(pixels), scorer.input_ids)
        bare = torch.softmax(bare[-1][:, ids], -1)
        assert (bare - own).abs().max() > 1e-5


def test_logit_lens_files_hold_the_means_and_examples(module, images, tmp_path):
    options = {"top_k": 3, "examples": 2}
    result, files = run_analysis("logit_lens", analysis_trainer(accelerator="cpu"), module,
                                 loader(images), options, tmp_path)  # fmt: skip
    assert [f.name for f in files] == list(logit_lens.FILES) and all(
        f.stat().st_size for f in files
    )
    with torch.no_grad():
        own = module.scorer.distribution(images.pixels).double().mean(0)
    with open(tmp_path / "logit_lens.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    layers = len(module.backbone.language_model().layers)
    assert len(rows) == layers * len(WORDS) and rows[0]["layer"] == "1"
    last = [float(r["mean_renormalised_probability"]) for r in rows if r["layer"] == str(layers)]
    assert torch.allclose(torch.tensor(last, dtype=torch.float64), own, atol=1e-5)
    per_layer = {}
    for r in rows:
        per_layer.setdefault(r["layer"], []).append(float(r["mean_renormalised_probability"]))
    assert all(abs(sum(v) - 1) < 1e-5 for v in per_layer.values())
    assert all(float(r["mean_probability"]) <= float(r["mean_renormalised_probability"])
               for r in rows)  # fmt: skip
    with open(tmp_path / "logit_lens_examples.csv", newline="") as f:
        examples = list(csv.DictReader(f))
    assert [r["image_id"] for r in examples] == ["img00.png"] * layers + ["img01.png"] * layers
    assert list(examples[0])[-1] == "probability_3"
    with open(tmp_path / "logit_lens_top.csv", newline="") as f:
        top = list(csv.DictReader(f))
    assert len(top) == 3 * layers and result.image_ids == [f"img{i:02d}.png" for i in range(12)]


# ------------------------------------------------------------------------ instability
@pytest.fixture(scope="module")
def level_batches(module, images):
    return collect(analysis_trainer(accelerator="cpu"), module, loader(images),
                   instability.compute, {})  # fmt: skip


def test_instability_is_zero_at_temperature_zero(module, images, level_batches, tmp_path):
    options = {"samples": 10, "temperature": 0.0}
    result = instability.summarise(level_batches, module.scorer, options)
    instability.write(result, tmp_path)
    summary = json.loads((tmp_path / "instability.json").read_text())
    assert summary["instability"] == 0.0 and summary["mean_score_std"] == 0.0
    assert summary["n_images"] == 12 and summary["samples"] == 10
    with torch.no_grad():
        argmax = module.scorer.distribution(images.pixels).argmax(-1)
    with open(tmp_path / "instability.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row, best in zip(rows, argmax, strict=True):
        assert row["levels"].split(";") == [WORDS[best]] * 10 and row["majority"] == WORDS[best]
        assert float(row["agreement"]) == 1.0 and float(row["score_mean"]) == WEIGHTS[best]


def test_instability_is_a_fraction_that_the_per_image_rows_add_up_to(
    module, level_batches, tmp_path
):
    options = {"samples": 16, "temperature": 1.0, "seed": 3}
    result = instability.summarise(level_batches, module.scorer, options)
    instability.write(result, tmp_path)
    summary = json.loads((tmp_path / "instability.json").read_text())
    assert 0 < summary["instability"] <= 1 and summary["mean_score_std"] > 0
    with open(tmp_path / "instability.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["n_images"] == 12
    unstable, stds = 0, []
    for row in rows:
        levels = row["levels"].split(";")
        assert len(levels) == 16 and set(levels) <= set(WORDS)
        counts = [levels.count(w) for w in WORDS]
        assert row["majority"] == WORDS[counts.index(max(counts))]
        assert float(row["agreement"]) == pytest.approx(max(counts) / 16)
        scores = torch.tensor([WEIGHTS[WORDS.index(w)] for w in levels], dtype=torch.float64)
        assert float(row["score_mean"]) == pytest.approx(float(scores.mean()), abs=1e-6)
        assert float(row["score_std"]) == pytest.approx(float(scores.std(correction=0)), abs=1e-6)
        unstable += len(set(levels)) > 1
        stds.append(float(row["score_std"]))
    assert summary["instability"] == pytest.approx(unstable / 12)
    assert summary["mean_score_std"] == pytest.approx(sum(stds) / 12, abs=1e-6)
    again = instability.summarise(level_batches, module.scorer, options)
    assert torch.equal(again.levels, result.levels), "the seed fixes the draws"


def test_sampling_distribution_temperature_top_p_and_bad_settings():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.4, 0.4]]))
    assert torch.allclose(instability.level_probabilities(z, 1.0), z.exp().double())
    assert torch.equal(instability.level_probabilities(z, 0.0),
                       torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64))  # fmt: skip
    nucleus = instability.level_probabilities(z[:1], 1.0, top_p=0.6)
    assert torch.allclose(nucleus, torch.tensor([[0.625, 0.375, 0.0]], dtype=torch.float64))
    assert torch.equal(instability.level_probabilities(z[:1], 1.0, top_p=0.5)[0, 1:],
                       torch.zeros(2, dtype=torch.float64))  # fmt: skip
    sharp = instability.level_probabilities(z[:1], 0.1)
    assert sharp[0, 0] > 0.99
    for bad in ({"samples": 0}, {"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}):
        with pytest.raises(ConfigError, match=f"analysis.{next(iter(bad))}"):
            instability.check(bad)
    with pytest.raises(ConfigError, match="analysis.top_k"):
        logit_lens.check({"top_k": 0})


# ----------------------------------------------------------------------------- driver
def test_without_run_the_driver_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["analyze", "analysis=instability"])
    with pytest.raises(SystemExit) as exit_info:
        driver.main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {driver.RUN_REQUIRED}"]
    assert driver.dataset_overrides(["run=r", "dataset.root=/d", "analysis.top_k=2"]) == [
        "run=r", "+dataset.root=/d", "analysis.top_k=2"]  # fmt: skip
    assert driver.dataset_overrides(["dataset=koniq", "dataset.root=/d"]) == [
        "dataset=koniq", "dataset.root=/d"]  # fmt: skip


@pytest.mark.slow  # a subprocess; in-process: test_logit_lens_files_hold_the_means_and_examples
def test_the_driver_writes_the_logit_lens_of_a_run_folder(demo_run, run_env):
    run, _ = demo_run
    args = [f"run={run}", "analysis=logit_lens", "analysis.max_images=8", "analysis.top_k=3"]
    proc = run_train(args, run_env, entry=("-m", "iqa_lightning.analyze"))
    folder = run / "analysis"
    for name in logit_lens.FILES:
        assert (folder / name).stat().st_size > 0, name
        assert str(folder / name) in proc.stdout
    with open(folder / "logit_lens_examples.csv", newline="") as f:
        examples = list(csv.DictReader(f))
    with open(folder / "logit_lens.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    layers = len({r["layer"] for r in rows})
    assert len(examples) == 4 * layers and "token_3" in examples[0]
    test_ids = [r["image_id"] for r in csv.DictReader(open(run / "predictions_test.csv"))]
    assert examples[0]["image_id"] in test_ids, "the run's own test split by default"
    media = "wandb/offline-run-*/files/media/{}/analysis/logit_lens/logit_lens_{}_*.{}"
    assert list(run.glob(media.format("table", "table", "table.json"))), "the W&B table"
    assert list(run.glob(media.format("images", "plot", "png"))), "the W&B heatmap"


def test_the_runs_own_dataset_is_the_default_and_keys_given_change_it():
    from omegaconf import OmegaConf

    run_cfg = OmegaConf.create({
        "seed": 7, "model": {"image_size": 64}, "paths": {"cache_dir": "/c"},
        "dataset": {"_target_": "D", "root": "/old", "image_size": "${model.image_size}",
                    "seed": "${seed}", "cache_dir": "${paths.cache_dir}/pre"},
    })  # fmt: skip
    own = driver.dataset_config(OmegaConf.create({"dataset": None}), run_cfg)
    assert own == {"_target_": "D", "root": "/old", "image_size": 64, "seed": 7,
                   "cache_dir": "/c/pre"}  # fmt: skip
    moved = driver.dataset_config(OmegaConf.create({"dataset": {"root": "/new"}}), run_cfg)
    assert moved.root == "/new" and moved.image_size == 64
    other = OmegaConf.create({"dataset": {"_target_": "Other", "root": "/k"}})
    assert driver.dataset_config(other, run_cfg) == other.dataset
