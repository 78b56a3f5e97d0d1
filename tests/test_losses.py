"""Level targets and losses: Q-Align's level bins, DeQA-Score's soft labels against numbers
recorded from its own code, KonIQ-10k's rating histograms, and the two losses on a tiny LMM."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from iqa_lightning.callbacks.predictions import COLUMNS, prediction_columns
from iqa_lightning.data import KADIDDataModule, KonIQDataModule
from iqa_lightning.data.records import AnnotationError
from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.levels import (
    QALIGN_LEVELS,
    LevelTargets,
    gaussian_labels,
    histogram_labels,
    level_index,
    to_level_scale,
    two_level_labels,
)
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule

from .data.fixtures import koniq_counts_of, koniq_sd_of, write_kadid, write_koniq

GOLDEN = Path(__file__).parent / "fixtures" / "soft_labels" / "deqa_soft_labels.json"
SETS = json.loads(GOLDEN.read_text())["datasets"]


@pytest.mark.parametrize("name", sorted(SETS))
def test_soft_labels_match_deqa_scores_own_construction(name):
    recorded = SETS[name]
    rows = recorded["rows"]
    lo, hi = recorded["min_mos"], recorded["max_mos"]
    mos = torch.tensor([r["mos"] for r in rows], dtype=torch.float64)
    std = torch.tensor([r["std"] for r in rows], dtype=torch.float64)
    # As the data module gives them: targets over a declared range wider than the set's scores,
    # the std in target units; range=observed cuts the set's own lowest..highest score.
    declared = (lo - 7.0, hi + 3.0)
    span = declared[1] - declared[0]
    batch = {"target": (mos - declared[0]) / span, "target_std": std / span}
    levels = LevelTargets(density=recorded["density_type"])
    levels.set_bounds((float(batch["target"].min()), float(batch["target"].max())))
    labels = levels.soft_labels(batch)
    expected = torch.tensor([r["level_probs"] for r in rows], dtype=torch.float64)
    assert torch.allclose(labels, expected, atol=1e-9, rtol=0)
    words = [QALIGN_LEVELS[i] for i in levels.level_index(batch["target"])]
    assert words == [r["level"] for r in rows]
    scale, scale_std = to_level_scale(batch["target"], *levels.bounds, batch["target_std"])
    assert torch.allclose(scale, torch.tensor([r["mos_norm"] for r in rows], dtype=torch.float64))
    assert torch.allclose(
        scale_std, torch.tensor([r["std_norm"] for r in rows], dtype=torch.float64)
    )


def test_soft_labels_keep_the_score_as_their_mean_and_the_fallbacks_fire():
    mos = torch.tensor([3.2, 3.2, 1.3, 4.6], dtype=torch.float64)
    std = torch.tensor([0.7, 0.1, 1.5, 0.6], dtype=torch.float64)
    labels = gaussian_labels(mos, std)
    levels = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    assert torch.allclose(labels @ levels, mos, atol=0.1)
    # std 0.1 < min_std: the two-level label, 0.8 on fair and 0.2 on good
    assert torch.allclose(labels[1], torch.tensor([0, 0.2, 0.8, 0, 0], dtype=torch.float64))
    assert torch.equal(labels[1], two_level_labels(mos[1:2])[0])
    # a wide std at the bottom: the clamped label misses 1.3 by more than max_shift
    assert torch.equal(labels[2], two_level_labels(mos[2:3])[0])
    # the Gaussian case keeps mass on three or more levels
    assert int((labels[0] > 1e-3).sum()) >= 3


def test_level_bins_at_their_edges():
    edges = [1.8, 2.6, 3.4, 4.2]
    on = torch.tensor([1.0, *edges, 5.0], dtype=torch.float64)
    # a score on an edge is the lower level; 1 is bad and 5 excellent
    assert level_index(on).tolist() == [4, 4, 3, 2, 1, 0]
    assert level_index(on[1:5] + 1e-6).tolist() == [3, 2, 1, 0]
    assert level_index(torch.tensor([0.2, 5.7])).tolist() == [4, 0]
    levels = LevelTargets()
    levels.set_bounds((0.2, 0.7))  # the observed range, in target units
    targets = torch.tensor([0.2, 0.3, 0.3 + 1e-6, 0.45, 0.7], dtype=torch.float64)
    assert [QALIGN_LEVELS[i] for i in levels.level_index(targets)] == [
        "bad", "bad", "poor", "fair", "excellent",
    ]  # fmt: skip
    declared = LevelTargets(range="declared")
    assert declared.bounds == (0.0, 1.0)
    assert declared.level_index(
        torch.tensor([0.2, 0.2 + 1e-6, 1.0], dtype=torch.float64)
    ).tolist() == [4, 3, 0]


def test_histograms_from_koniq_files_in_their_published_layout(tmp_path):
    for labels_file in ("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv"):
        root = write_koniq(tmp_path / labels_file, 20, with_sets=True, with_scores=True)
        dm = KonIQDataModule(
            root=root, labels_file=labels_file, image_size=16, target="histogram",
            split="random", batch_size=20, eval_batch_size=20, hflip=False,
        )  # fmt: skip
        dm.setup("fit")
        batch = next(iter(dm.eval_dataloader("all")))
        index = [sorted(batch["image_id"]).index(i) for i in batch["image_id"]]
        counts = torch.tensor([koniq_counts_of(i, 20) for i in index], dtype=torch.float64)
        expected = (counts / counts.sum(-1, keepdim=True)).flip(-1)
        assert torch.allclose(histogram_labels(batch["target_hist"]), expected, atol=1e-6)
        sd = torch.tensor([koniq_sd_of(i) for i in index])
        assert torch.allclose(batch["target_std"], sd / 4, atol=1e-6)  # SD on the 1-5 scale
        assert LevelTargets().soft_labels(batch).shape == (20, 5)
    plain = KonIQDataModule(root=root, image_size=16, split="random", batch_size=4)
    plain.setup("fit")
    assert "target_hist" not in next(iter(plain.val_dataloader()))


def test_histogram_errors_name_the_file_and_the_dataset(tmp_path):
    root = write_koniq(tmp_path / "k", 20, with_sets=False, with_scores=True)
    labels = root / "koniq10k_scores_and_distributions.csv"
    lines = labels.read_text().splitlines()
    lines = [",".join(c for j, c in enumerate(line.split(",")) if j != 3) for line in lines]
    labels.write_text("\n".join(lines) + "\n")  # drops c3
    dm = KonIQDataModule(root=root, image_size=16, target="histogram", split="random")
    with pytest.raises(AnnotationError, match=r"koniq10k_scores_and_distributions.csv.*'c3'"):
        dm.setup("fit")
    kadid = KADIDDataModule(root=write_kadid(tmp_path / "kadid"), target="histogram")
    with pytest.raises(AnnotationError, match="kadid: dataset.target=histogram"):
        kadid.setup("fit")
    with pytest.raises(ValueError, match="dataset.target must be one of"):
        KADIDDataModule(root=tmp_path, target="hist")


# ------------------------------------------------------------------ the losses on a tiny LMM
QALIGN = {
    "words": list(QALIGN_LEVELS),
    "weights": [1.0, 0.75, 0.5, 0.25, 0.0],
    "question": "How would you rate the quality of this image?",
    "name": "qalign",
}


@pytest.fixture(scope="module")
def backbone():
    return build_tiny_llava()


def make(backbone, loss, **levels):
    phase = {"name": "s", "trainable": ["prompt"], "optimizer": partial(torch.optim.SGD, lr=1)}
    prompt = PaddingPrompt(backbone.image_size, size=8)
    return IQAModule(
        backbone, prompt, WordScore(**QALIGN), phases=[phase], loss=loss,
        levels={"range": "declared", **levels},
    )  # fmt: skip


def batch_of(size=64):
    gen = torch.Generator().manual_seed(0)
    return {
        "pixels": torch.rand(4, 3, size, size, generator=gen),
        "target": torch.tensor([0.05, 0.35, 0.62, 0.97]),
        "mos_raw": torch.tensor([1.2, 2.4, 3.5, 4.9]),
        "target_std": torch.tensor([0.15, 0.2, 0.1, 0.02]),
        "image_id": ["a", "b", "c", "d"],
    }


@pytest.mark.parametrize("loss", ["level_ce", "soft_label"])
def test_level_losses_train_only_the_prompt_and_fall(backbone, loss):
    module = make(backbone, loss)
    batch = batch_of(backbone.image_size)
    prompt = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(prompt, lr=0.05)
    losses = []
    for _ in range(4):
        optimiser.zero_grad()
        output, value = module.score_step(batch)
        value.backward()
        losses.append(value.item())
        optimiser.step()
    grads = {n for n, p in module.scorer.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("prompt.") for n in grads)
    assert all(p.grad is None for p in backbone.parameters())
    assert losses[-1] < losses[0]
    assert torch.allclose(output.probs.sum(-1), torch.ones(4), atol=1e-5)


def test_loss_values_are_the_references_formulas(backbone):
    module = make(backbone, "soft_label")
    batch = batch_of(backbone.image_size)
    logits = module.scorer.logits(batch["pixels"]).float()
    ids = module.score.token_ids
    log_p = torch.log_softmax(logits, -1)[:, ids]  # over the vocabulary, as DeQA-Score
    labels = module.loss.levels.soft_labels(batch).float()
    kl = (torch.xlogy(labels, labels) - labels * log_p).sum() / 4
    assert module.score_step(batch)[1].item() == pytest.approx(float(kl), rel=1e-5)
    ce = make(backbone, "level_ce", softmax="words")
    words = torch.log_softmax(logits[:, ids], -1)
    expected = -words[torch.arange(4), torch.tensor([4, 3, 1, 0])].mean()  # bad, poor, good, exc.
    assert ce.score_step(batch)[1].item() == pytest.approx(float(expected), rel=1e-5)


def test_config_errors_are_named(backbone):
    phase = {"name": "s", "trainable": ["prompt"], "optimizer": partial(torch.optim.SGD, lr=1)}
    prompt = PaddingPrompt(backbone.image_size, size=8)
    good_bad = WordScore(["good", "bad"], [1, 0], name="good_vs_bad")
    with pytest.raises(ValueError, match=r"module.loss=soft_label .* score=good_vs_bad"):
        IQAModule(backbone, prompt, good_bad, phases=[phase], loss="soft_label")
    with pytest.raises(ValueError, match=r"must be one of \['deqa_score', 'l1', 'level_ce', 'level_ce_answer', 'mse', 'smooth_l1', 'soft_label'\]"):
        IQAModule(backbone, prompt, WordScore(**QALIGN), phases=[phase], loss="kl")
    with pytest.raises(ValueError, match="module.levels.density='gauss'"):
        LevelTargets(density="gauss")
    with pytest.raises(ValueError, match="module.levels.range=observed needs"):
        LevelTargets().level_index(torch.tensor([0.5]))
    no_std = {k: v for k, v in batch_of(8).items() if k != "target_std"}
    with pytest.raises(ValueError, match="module.levels.std="):
        LevelTargets(range="declared").soft_labels(no_std)
    fixed = LevelTargets(range="declared", std=0.6).soft_labels(no_std)
    scale = 1 + 4 * no_std["target"].double()
    assert torch.allclose(fixed @ torch.arange(5.0, 0.0, -1, dtype=torch.float64), scale, atol=0.1)
    assert torch.equal(fixed, gaussian_labels(scale, torch.full((4,), 0.6, dtype=torch.float64)))


def test_test_rows_carry_predicted_and_target_distributions(backbone):
    module = make(backbone, "soft_label")
    module.test_rows = []
    module._eval_step(batch_of(backbone.image_size), "test")
    rows = module.test_rows
    columns = prediction_columns(rows)
    words = list(QALIGN_LEVELS)
    assert columns == [*COLUMNS, *(f"p_{w}" for w in words), *(f"target_{w}" for w in words)]
    assert sum(rows[0][f"p_{w}"] for w in words) == pytest.approx(1.0, abs=1e-5)
    labels = module.loss.levels.soft_labels(batch_of(backbone.image_size))
    assert [rows[3][f"target_{w}"] for w in words] == pytest.approx(labels[3].tolist())


def test_distribution_panel_shows_predicted_beside_target(tmp_path):
    from iqa_lightning.callbacks.plots import distribution_figure, pick_spread

    words = list(QALIGN_LEVELS)
    rows = []
    for i in range(10):
        predicted = torch.softmax(torch.arange(5.0) * (i - 5) / 5, 0).tolist()
        row = {"image_id": f"im{i}", "mos_raw": 1 + 0.4 * i, "target": i / 9, "score": i / 9}
        row.update({f"p_{w}": p for w, p in zip(words, predicted, strict=True)})
        row.update({f"target_{w}": float(w == "fair") for w in words})
        rows.append(row)
    picked = pick_spread(rows, 4)
    assert [r["image_id"] for r in picked] == ["im0", "im3", "im6", "im9"]
    fig = distribution_figure(rows, "demo run", count=4)
    assert len(fig.axes) == 4 and "predicted vs target" in fig._suptitle.get_text()
    bars = fig.axes[0].patches
    assert len(bars) == 10  # 5 predicted + 5 target bars
    assert [b.get_height() for b in bars[:5]] == pytest.approx([rows[0][f"p_{w}"] for w in words])
    assert [b.get_height() for b in bars[5:]] == [0, 0, 1, 0, 0]
    plain = [{k: v for k, v in r.items() if not k.startswith("p_")} for r in rows]
    assert distribution_figure(plain) is None


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from iqa_lightning.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=["experiment=smoke", *overrides])


def test_configs_compose_and_a_wrong_score_head_fails_before_the_model_loads():
    from iqa_lightning.cli import ConfigError
    from iqa_lightning.train import check_config

    cfg = compose("score=qalign", "module.loss=soft_label", "dataset.target=histogram")
    assert cfg.module.levels.range == "observed" and cfg.dataset.target == "histogram"
    check_config(cfg)
    with pytest.raises(ConfigError, match=r"module.loss=level_ce .* score=good_fine_vs_poor_bad"):
        check_config(compose("module.loss=level_ce"))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["level_ce", "soft_label"])
def test_train_cli_with_a_level_loss_writes_distributions(loss, run_env, tmp_path):
    import csv

    from .conftest import FAST, run_train

    run_train([*FAST, "score=qalign", f"module.loss={loss}", f"hydra.run.dir={tmp_path}"], run_env)
    rows = list(csv.DictReader((tmp_path / "predictions_test.csv").open()))
    assert {f"p_{w}" for w in QALIGN_LEVELS} | {f"target_{w}" for w in QALIGN_LEVELS} <= set(
        rows[0]
    )
    for row in rows:
        assert sum(float(row[f"p_{w}"]) for w in QALIGN_LEVELS) == pytest.approx(1, abs=1e-5)
        if loss == "level_ce":
            assert sorted(float(row[f"target_{w}"]) for w in QALIGN_LEVELS) == [0, 0, 0, 0, 1]
    assert (tmp_path / "plots" / "distributions_test.png").stat().st_size > 0


def test_level_ce_answer_trains_the_whole_answer_as_q_align(backbone):
    """Q-Align's target: the next-token loss on "The quality of the image is <level>." (every
    answer token), the same number as the instruct path gives for those conversations."""
    module = make(backbone, "level_ce_answer")
    batch = batch_of(backbone.image_size)
    value = module.score_step(batch)[1]
    words = ["bad", "poor", "good", "excellent"]  # the batch's levels (targets 0.05 .. 0.97)
    turns = [[(QALIGN["question"], f"The quality of the image is {w}.")] for w in words]
    expected = module.scorer.instruct_loss(batch["pixels"], turns)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert all(p.grad is None for p in backbone.parameters())


def test_a_loss_object_in_the_hyperparameters_leaves_a_weights_only_checkpoint(backbone, tmp_path):
    from iqa_lightning.checkpoints import load_checkpoint
    from iqa_lightning.models.losses import RegressionLoss

    module = make(backbone, RegressionLoss("l1"))
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["hyper_parameters"]["loss"] == "iqa_lightning.models.losses.RegressionLoss"
    torch.save(checkpoint, tmp_path / "c.ckpt")
    assert load_checkpoint(tmp_path / "c.ckpt", map_location="cpu")["hyper_parameters"]["loss"]
    assert module.loss.name == "l1"
