"""DeQA-Score's whole loss (``module.loss=deqa_score``) against numbers recorded from its own code
(tests/fixtures/deqa_score_loss/), its pair batches (``dataset.sampler=pairs``), and the answer
it trains on a tiny LMM."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from iqa_lightning.data.pairs import PairBatchSampler, collate_pairs
from iqa_lightning.errors import ConfigError
from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.losses import DeQAScoreLoss, make_loss, thurstone_fidelity
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule

GOLDEN = json.loads(
    (Path(__file__).parent / "fixtures" / "deqa_score_loss" / "deqa_score_loss.json").read_text()
)
QALIGN = {
    "words": ["excellent", "good", "fair", "poor", "bad"],
    "weights": [1.0, 0.75, 0.5, 0.25, 0.0],
    "question": "How would you rate the quality of this image?",
    "answer_prefix": "The quality of the image is",
}


def golden_inputs():
    inputs = GOLDEN["inputs"]
    logits = torch.tensor(inputs["logits"], dtype=torch.float64)  # [2n, N, V]
    labels = torch.tensor(inputs["labels"])
    level_ids = torch.tensor(inputs["level_ids"])
    at_level = torch.isin(labels, level_ids).long().argmax(-1)  # the level token of each answer
    rows = logits[torch.arange(len(labels)), at_level - 1]  # the logits that predict it
    gt = torch.tensor(inputs["gt_score"], dtype=torch.float64)
    std = torch.tensor(inputs["std"], dtype=torch.float64)
    # Targets /4 over the declared range (0, 1): on the 1-5 level scale they are 1 + MOS and the
    # std itself, the reference's units (its eps 1e-8 in the variance is not scale-free).
    batch = {
        "target": gt / 4, "target_std": std / 4, "pairs": len(labels) // 2,
        # the reference's soft labels (best first) as a rating histogram (worst first)
        "target_hist": torch.tensor(inputs["level_probs"], dtype=torch.float64).flip(-1),
    }  # fmt: skip
    return logits, labels, at_level, rows, level_ids, batch


def rest_of_answer_ce(logits, labels, at_level):
    """The next-token loss with the level token's label ignored (what LevelAnswers labels)."""
    masked = labels.clone()
    masked[torch.arange(len(labels)), at_level] = -100
    flat = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, masked[:, 1:].reshape(-1), ignore_index=-100)


def test_deqa_score_loss_equals_its_reference_code():
    logits, labels, at_level, rows, level_ids, batch = golden_inputs()
    recorded, config = GOLDEN["outputs"], GOLDEN["config"]
    n = batch["pairs"]
    loss = DeQAScoreLoss(
        weight_rank=config["weight_rank"], weight_softkl=config["weight_softkl"],
        weight_next_token=config["weight_next_token"], fixed_std=config["use_fix_std"],
        closeset=config["closeset_rating_loss"], range="declared",
    )  # fmt: skip
    log_probs = torch.log_softmax(rows, -1)[:, level_ids]
    ce = tuple(
        rest_of_answer_ce(logits[p], labels[p], at_level[p]) for p in (slice(0, n), slice(n, None))
    )
    for half, value in zip("AB", ce, strict=True):  # masking the level label = deleting it
        assert value.item() == pytest.approx(recorded[half]["rest_ce"], rel=1e-12)
    terms = loss.combine(log_probs, rows[:, level_ids], batch, ce)
    for half in "AB":
        part = slice(0, n) if half == "A" else slice(n, None)
        assert terms[f"kl_{half.lower()}"].item() == pytest.approx(recorded[half]["kl"], rel=1e-12)
        assert terms[f"next_token_{half.lower()}"].item() == pytest.approx(
            recorded[half]["next_token_loss"], rel=1e-12
        )
        assert terms["scores"][part].tolist() == pytest.approx(
            recorded[half]["pred_scores"], rel=1e-12
        )
        assert terms["stds"][part].tolist() == pytest.approx(recorded[half]["pred_stds"], rel=1e-12)
    assert terms["rank"].item() == pytest.approx(recorded["rank_fixed_std"], rel=1e-12)
    assert terms["loss"].item() == pytest.approx(recorded["loss"], rel=1e-12)
    loss.fixed_std = False
    rank = loss.combine(log_probs, rows[:, level_ids], batch, None)["rank"]
    assert rank.item() == pytest.approx(recorded["rank_pred_std"], rel=1e-12)


def test_fidelity_is_zero_only_where_prediction_and_truth_agree():
    a, b = torch.tensor([4.0, 1.0]), torch.tensor([1.0, 4.0])
    std = torch.ones(2)
    agree = thurstone_fidelity(a, b, a * 10, b * 10, std, std)
    disagree = thurstone_fidelity(a, b, b * 10, a * 10, std, std)
    assert agree.item() < 0.01 < 0.5 < disagree.item()


def test_pair_batches_draw_each_partner_from_its_own_dataset():
    groups = ["koniq"] * 5 + ["spaq"] * 3 + ["kadid"] * 4
    sampler = PairBatchSampler(range(12), batch_size=4, groups=groups, seed=1)
    batches = list(sampler)
    assert [len(b) for b in batches] == [8, 8, 8]
    assert sorted(i for b in batches for i in b[:4]) == list(range(12))  # every image once as A
    for batch in batches:
        for a, b in zip(batch[:4], batch[4:], strict=True):
            assert a != b and groups[a] == groups[b]
    again = [list(b) for b in PairBatchSampler(range(12), batch_size=4, groups=groups, seed=1)]
    assert again == batches  # seeded
    with pytest.raises(ValueError, match="spaq has fewer than 2"):
        PairBatchSampler(range(3), batch_size=2, groups=["koniq", "koniq", "spaq"])
    pair = collate_pairs([{"target": torch.tensor(float(i))} for i in range(4)])
    assert pair["pairs"] == 2 and pair["target"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def backbone():
    return build_tiny_llava()


def make(backbone, loss):
    phase = {"name": "s", "trainable": ["prompt"], "optimizer": partial(torch.optim.SGD, lr=1)}
    prompt = PaddingPrompt(backbone.image_size, size=8)
    return IQAModule(
        backbone, prompt, WordScore(**QALIGN), phases=[phase], loss=loss,
        levels={"range": "declared"},
    )  # fmt: skip


def pair_batch(size):
    gen = torch.Generator().manual_seed(0)
    return {
        "pixels": torch.rand(4, 3, size, size, generator=gen),
        "target": torch.tensor([0.05, 0.62, 0.35, 0.97]),
        "target_std": torch.tensor([0.15, 0.2, 0.1, 0.02]),
        "pairs": 2,
    }


@pytest.mark.slow  # the same answer path runs by default in test_losses' level_ce_answer test
def test_deqa_score_on_a_tiny_lmm_trains_the_answer_and_the_ranks(backbone):
    module = make(backbone, "deqa_score")
    loss = module.loss
    batch = pair_batch(backbone.image_size)
    output, value = module.score_step(batch)
    # The answer loss: every answer token but the level word (one more label than level_ce's).
    answers = loss.answers
    ids, masked = answers.encode(2, mask_level=True)
    _, whole = answers.encode(2, mask_level=False)
    differs = [i for i, (m, w) in enumerate(zip(masked, whole, strict=True)) if m != w]
    assert len(differs) == 1 and whole[differs[0]] == int(module.score.token_ids[2])
    assert ids.count(int(module.score.token_ids[2])) == 1
    encoded = backbone.encode_conversation(
        [(QALIGN["question"], "The quality of the image is fair.")]
    )
    assert encoded == (ids, whole)  # the chat template's own labels
    ce = loss.answer_losses(batch)
    log_probs = loss.soft_label.log_probs(output)
    words = output.logits.float()[:, module.score.token_ids]
    expected = loss.combine(log_probs, words, batch, ce)["loss"]
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    grads = {n for n, p in module.scorer.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("prompt.") for n in grads)


def test_deqa_score_refuses_unpaired_training_data_and_missing_stds(backbone):
    loss = make_loss("deqa_score", {"range": "declared"})

    class Data:
        sampler = "shuffle"

    with pytest.raises(ConfigError, match="set dataset.sampler=pairs"):
        loss.setup(Data())
    batch = {"target": torch.tensor([0.2, 0.8])}
    with pytest.raises(ValueError, match="rating std"):
        loss.ground_truth(batch)
    with pytest.raises(ValueError, match="holds no pairs"):
        loss.halves({"target": torch.tensor([0.5])})


def test_presets_train_with_the_references_losses():
    from hydra import compose, initialize_config_dir

    from iqa_lightning.build import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        found = {}
        for name in ("deqa_score_mix3", "q_align_mix3", "q_align_koniq"):
            cfg = compose("train", overrides=[f"experiment={name}"])
            found[name] = (cfg.module.loss, cfg.dataset.sampler)
            loss = make_loss(cfg.module.loss, dict(cfg.module.levels))
    assert found == {
        "deqa_score_mix3": ("deqa_score", "pairs"),
        "q_align_mix3": ("level_ce_answer", "shuffle"),
        "q_align_koniq": ("level_ce_answer", "shuffle"),
    }
    deqa = make_loss("deqa_score", {})
    assert (deqa.weight_rank, deqa.weight_softkl, deqa.weight_next_token) == (1.0, 1.0, 0.05)
    assert deqa.fixed_std and deqa.closeset and loss.name == "level_ce_answer"
