"""GRPO (iqa_lightning/methods/grpo.py, models/rewards.py): the objective, the advantages and
the rewards against hand-computed values; on the trained tiny LMM the KL term is zero at step 0,
the reference policy is the same weights with LoRA bypassed, and one step changes LoRA only;
slow: a short run raises the mean reward and the test SRCC of the parsed scores."""

import math
from functools import partial

import pytest
import torch

from iqa_lightning.errors import ConfigError
from iqa_lightning.methods.grpo import (
    GRPOModule,
    adapters_disabled,
    clipped_objective,
    grpo_loss,
    per_token_kl,
)
from iqa_lightning.models.rewards import (
    Answers,
    FormatReward,
    RankingReward,
    ThresholdReward,
    group_advantages,
    make_rewards,
)


def test_advantages_kl_and_the_clipped_objective_by_hand():
    adv = group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1]), 4)
    std = math.sqrt(((0.75**2) + 3 * 0.25**2) / 3)  # unbiased
    expected = [0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3 + [0.0] * 4
    assert adv.tolist() == pytest.approx(expected)
    kl = per_token_kl(
        torch.tensor([0.0, math.log(0.5)]), torch.tensor([math.log(0.5), math.log(0.5)])
    )
    assert kl.tolist() == pytest.approx([0.5 - math.log(0.5) - 1, 0.0])
    logps, old = torch.tensor([[0.5], [0.5]]), torch.zeros(2, 1)
    loss, clipped = clipped_objective(logps, old, torch.tensor([1.0, -1.0]), 0.2, 0.2)
    assert loss[:, 0].tolist() == pytest.approx([-1.2, math.exp(0.5)])
    assert clipped[:, 0].tolist() == [True, False]
    # Masked: each sequence's mean over its tokens, then the mean of the sequences.
    total, figures = grpo_loss(
        torch.zeros(2, 3), torch.zeros(2, 3), torch.full((2, 3), math.log(0.5)),
        torch.tensor([1.0, 2.0]), torch.tensor([[1, 1, 0], [1, 0, 0]]), 0.1, 0.2, 0.2,
    )  # fmt: skip
    assert float(figures["kl"]) == pytest.approx(0.5 - math.log(0.5) - 1)
    assert float(total) == pytest.approx((-1 + -2) / 2 + 0.1 * (0.5 - math.log(0.5) - 1))


def test_the_rewards_by_hand():
    answers = Answers(
        texts=["<think>a</think><answer>4</answer>", "4.9", "<answer>1</answer>", "x"],
        scores=torch.tensor([4.0, 5.0, 1.0, 2.0]),
        parsed=torch.tensor([True, True, True, False]),
        mos=torch.tensor([4.2, 1.5]),
        group=2,
    )
    assert ThresholdReward(0.35)(answers).tolist() == [1.0, 0.0, 0.0, 0.0]  # a failure: 0
    fmt = FormatReward(r"<think>.*?</think>\s*<answer>.*?</answer>")
    assert fmt(answers).tolist() == [1.0, 0.0, 0.0, 0.0]
    # VisualQuality-R1's fidelity: image 0 (MOS 4.2) against image 1's mean 1.5, variances 0.5.
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    eps = 1e-6

    def fidelity(score, other_mean, gt):
        p = phi((score - other_mean) / math.sqrt(0.5 + 0.5 + eps))
        return math.sqrt(p * gt + eps) + math.sqrt((1 - p) * (1 - gt) + eps)

    expected = [fidelity(4, 1.5, 1), fidelity(5, 1.5, 1), fidelity(1, 4.5, 0), fidelity(2, 4.5, 0)]
    assert RankingReward()(answers).tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="rewards\\[0\\].type='nope'"):
        make_rewards([{"type": "nope"}])


def generation(max_new_tokens=8):
    return {
        "prompt": {"question": "Rate the quality of the image from 1 to 5."},
        "sampling": {"do_sample": False, "max_new_tokens": max_new_tokens},
        "parser": {},
    }


@pytest.fixture(scope="module")
def grpo_module():
    from iqa_lightning.tiny.trained import load_tiny_llava

    backbone = load_tiny_llava()
    phases = [{"name": "grpo", "trainable": ["lora"],
               "optimizer": partial(torch.optim.SGD, lr=0.5)}]  # fmt: skip
    return GRPOModule(
        backbone, None, phases, generation(),
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        rewards=[{"type": "format", "pattern": r".*\bwith\b.*"}, {"type": "threshold"}],
        group_size=2, rollout={"do_sample": True, "temperature": 1.0, "max_new_tokens": 4},
        beta=0.04,
    )  # fmt: skip


def test_one_grpo_step_starts_at_zero_kl_and_changes_lora_only(grpo_module):
    module = grpo_module.train()
    backbone = module.scorer.backbone
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    count = sum(1 for _ in module.parameters())
    torch.manual_seed(3)
    batch = {"pixels": torch.rand(2, 3, 64, 64), "target": torch.tensor([0.2, 0.9])}
    drawn = module.sample(batch)
    # The reference policy is the same weights with LoRA bypassed: no second copy.
    assert sum(1 for _ in module.parameters()) == count
    assert all(p.requires_grad for p in module.parameter_groups()["lora"].values())
    logps = module.scorer.token_logps(drawn["rollout"])
    assert torch.equal(logps, drawn["ref"])  # LoRA's B starts at zero: the KL term is zero
    # Advantages of both signs (four words of text earn no reward yet), reused for the step.
    drawn["advantages"] = torch.tensor([1.0, -1.0, -1.0, 1.0])
    module._buffer, module._grpo_steps, module.iterations = drawn, 1, 2
    loss = module.grpo_step(batch)
    loss.backward()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    optimizer.step()
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    lora = {f"scorer.{n}" for n in module.parameter_groups()["lora"]}
    assert changed and changed <= lora, sorted(changed - lora)[:3]
    # Now the policy and the reference differ, and the reference is still the base model.
    with torch.no_grad():
        after = module.scorer.token_logps(drawn["rollout"])
        with adapters_disabled(backbone):
            ref = module.scorer.token_logps(drawn["rollout"])
    assert not torch.equal(after, ref) and torch.equal(ref, drawn["ref"])


def test_a_level_word_parser_reads_words_and_writes_the_warm_up_answers():
    from iqa_lightning.models.generation import AnswerParser

    levels = {"none": 5, "slight": 4, "moderate": 3, "strong": 2, "severe": 1}
    parser = AnswerParser(answer_pattern="^(.*)$", levels=levels)
    assert [parser.parse(t).score for t in ["Moderate.", "slight blur", "severely", "non", ""]] == [
        3.0, 4.0, None, None, None,
    ]  # whole words only; the first found  # fmt: skip
    assert parser.parse("strong or none").score == 2.0
    assert [parser.level_of(v) for v in (5.0, 3.4, 3.6, 1.0)] == ["none", "moderate", "slight",
                                                                   "severe"]  # fmt: skip
    with pytest.raises(ConfigError, match="parser.levels.good=7.0 lies outside"):
        AnswerParser(levels={"good": 7})
    with pytest.raises(ConfigError, match="parser.levels: 'very good' is not one word"):
        AnswerParser(levels={"very good": 4})
    with pytest.raises(ConfigError, match="needs method.generation.parser.levels"):
        AnswerParser().level_of(3.0)


def test_the_warm_up_writes_level_words_and_needs_a_parser_with_levels(grpo_module):
    from iqa_lightning.methods.generative import GenerativeModule

    backbone = grpo_module.scorer.backbone
    settings = generation()
    settings["parser"] = {"levels": {"good": 4, "bad": 2}}
    module = GenerativeModule(backbone, None, [{"name": "sft", "trainable": []}], settings,
                              sft_phases=("sft",), sft_answers="mos",
                              answer_format="It is {level}.")  # fmt: skip
    batch = {"target": torch.tensor([0.9, 0.1, 0.4])}  # 4.6, 1.4, 2.6 on 1-5
    assert module.supervised_answers(batch) == ["It is good.", "It is bad.", "It is bad."]
    module.sft_answers = "random"
    assert set(module.supervised_answers({"target": torch.zeros(40)})) == {"It is good.",
                                                                           "It is bad."}  # fmt: skip
    with pytest.raises(ConfigError, match="answer_format='{level}' writes a {level} word"):
        GenerativeModule(backbone, None, [{"name": "sft", "trainable": []}], generation(),
                         sft_phases=("sft",), answer_format="{level}")  # fmt: skip


def test_reference_start_is_the_policy_the_first_grpo_step_found():
    """``method.reference=start``: after a warm-up that trained LoRA, the KL term is still zero at
    the first GRPO step; the reference is a copy of the trained tensors alone, stays put while
    the policy moves, and travels in the checkpoint."""
    from iqa_lightning.tiny.trained import load_tiny_llava

    def build():
        phases = [{"name": "grpo", "trainable": ["lora"],
                   "optimizer": partial(torch.optim.SGD, lr=0.5)}]  # fmt: skip
        return GRPOModule(
            load_tiny_llava(), None, phases, generation(),
            lora={"r": 4, "alpha": 8, "dropout": 0.0}, rewards=[{"type": "threshold"}],
            group_size=2, rollout={"do_sample": True, "temperature": 1.0, "max_new_tokens": 4},
            beta=0.04, reference="start",
        ).train()  # fmt: skip

    module = build()
    trained = {n: p for n, p in module.named_parameters() if p.requires_grad}
    torch.manual_seed(0)
    with torch.no_grad():  # a warm-up: LoRA no longer zero
        for p in trained.values():
            p.add_(0.2 * torch.randn_like(p))
    count = sum(1 for _ in module.parameters())
    batch = {"pixels": torch.rand(2, 3, 64, 64), "target": torch.tensor([0.2, 0.9])}
    drawn = module.sample(batch)
    assert set(module.reference_state) == set(trained)  # the trained tensors alone
    assert sum(1 for _ in module.parameters()) == count
    with torch.no_grad():
        logps = module.scorer.token_logps(drawn["rollout"])
        with adapters_disabled(module.scorer.backbone):
            base = module.scorer.token_logps(drawn["rollout"])
    assert torch.equal(logps, drawn["ref"])  # zero KL at the first step
    assert not torch.allclose(base, drawn["ref"])  # the base model is not the reference
    loss = module.grpo_step(batch)
    loss.backward()
    with torch.no_grad():
        for p in trained.values():
            p.sub_(0.5 * p.grad)
    moved = {n: p.detach().clone() for n, p in trained.items()}
    with torch.no_grad(), module.reference_policy():
        ref = module.scorer.token_logps(drawn["rollout"])
    assert torch.equal(ref, drawn["ref"])
    assert all(torch.equal(p, moved[n]) for n, p in trained.items())  # put back after the block
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    other = build()
    other.on_load_checkpoint(checkpoint)
    assert all(torch.equal(other.reference_state[n], v) for n, v in module.reference_state.items())
    with pytest.raises(ConfigError, match="method.reference='copy'"):
        GRPOModule(load_tiny_llava(), None, [{"name": "grpo", "trainable": []}], generation(),
                   rewards=[{"type": "threshold"}], reference="copy")  # fmt: skip


#: experiment=grpo_learning in seconds: a small learning set, two GRPO steps, one batch each of
#: validation and test.
QUICK = [
    "dataset.train_images=16", "dataset.val_images=8", "dataset.test_images=8",
    "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1", "trainer.max_epochs=1", "callbacks.plots=null",
]  # fmt: skip


def _rewards(folder):
    import csv

    with open(folder / "grpo_rewards.csv", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_grpo_learning_scores_the_start_then_trains_and_logs_each_steps_reward(tmp_path, cache_dir):
    """The path of the slow proof below, in seconds: the starting model's answers are parsed
    (zero-shot), GRPO steps run, and each step's rewards reach grpo_rewards.csv."""
    from tests.training import train_in_process

    metrics = train_in_process(["experiment=grpo_learning", *QUICK], tmp_path, cache_dir)
    assert {"zeroshot/srcc", "test/srcc", "test/parse_failures"} <= set(metrics)
    assert metrics["test/parse_failures"] < 8  # the pre-trained model writes strength words
    rows = _rewards(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert {"reward", "accuracy", "ranking", "parsed"} <= set(rows[0])
    for row in rows:
        assert row["reward"] == pytest.approx(row["accuracy"] + row["ranking"])
    # stage.init_from: a new GRPO run starts from this run's LoRA (SFT, then GRPO)
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from iqa_lightning.build import build_module
    from iqa_lightning.run_folder import RunFolder

    cfg = OmegaConf.load(RunFolder(tmp_path).config)
    cfg.stage.init_from = str(tmp_path)
    module = build_module(cfg)
    saved = load_file(str(RunFolder(tmp_path).tuned))
    loaded = module.tuned_state_dict()
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[name], saved[name]) for name in saved)
    assert any(name.endswith("lora_B.default.weight") and saved[name].abs().sum() > 0
               for name in saved)  # trained, so not the fresh LoRA's zeros  # fmt: skip


@pytest.mark.slow
def test_grpo_raises_the_mean_reward_and_the_test_srcc_of_the_parsed_scores(tmp_path, cache_dir):
    """experiment=grpo_learning (~2 min): 4 epochs of GRPO from the pre-trained tiny LMM raise
    the mean reward (last epoch's steps over the first's) and the test SRCC of the parsed
    answers over the starting model's, on photographs it never saw."""
    from tests.training import train_in_process

    metrics = train_in_process(["experiment=grpo_learning"], tmp_path, cache_dir)
    rewards = [r["reward"] for r in _rewards(tmp_path)]
    first, last = rewards[:60], rewards[-60:]
    assert sum(last) / len(last) > sum(first) / len(first) + 0.05, (first, last)
    assert metrics["test/srcc"] > metrics["zeroshot/srcc"] + 0.1, metrics


def test_full_parameter_grpo_trains_the_decoder_against_a_copy_of_it():
    """``trainable: [language_model]`` (the references' full-parameter GRPO): one step changes
    the decoder's weights and nothing else, the reference (``start``) is the decoder as the step
    found it, and ``reference: base`` (LoRA bypassed) is refused for it."""
    from iqa_lightning.tiny.trained import load_tiny_llava

    phases = [{"name": "grpo", "trainable": ["language_model"],
               "optimizer": partial(torch.optim.SGD, lr=0.5)}]  # fmt: skip
    module = GRPOModule(
        load_tiny_llava(), None, phases, generation(), rewards=[{"type": "threshold"}],
        group_size=2, rollout={"do_sample": True, "temperature": 1.0, "max_new_tokens": 4},
        beta=0.04, reference="start",
    ).train()  # fmt: skip
    backbone = module.scorer.backbone
    decoder = {id(p) for m in (backbone.language_model(), backbone.lm_head())
               for p in m.parameters()}  # fmt: skip
    trained = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert trained and all(id(p) in decoder for p in trained.values())
    assert not any(id(p) in decoder for p in backbone.vision_tower().parameters())
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    torch.manual_seed(1)
    batch = {"pixels": torch.rand(2, 3, 64, 64), "target": torch.tensor([0.2, 0.9])}
    drawn = module.sample(batch)
    drawn["advantages"] = torch.tensor([1.0, -1.0, -1.0, 1.0])
    module._buffer, module._grpo_steps, module.iterations = drawn, 1, 2
    module.grpo_step(batch).backward()
    with torch.no_grad():
        for p in trained.values():
            p.sub_(0.5 * p.grad)
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(trained)
    with torch.no_grad(), module.reference_policy():
        assert torch.equal(module.scorer.token_logps(drawn["rollout"]), drawn["ref"])
    with pytest.raises(ConfigError, match="phase grpo trains \\['language_model'\\]"):
        GRPOModule(load_tiny_llava(), None, phases, generation(),
                   rewards=[{"type": "threshold"}], reference="base")  # fmt: skip


def test_the_rewards_file_grows_by_epoch_and_a_resume_keeps_its_steps(tmp_path):
    from iqa_lightning.methods.grpo import append_reward_rows, keep_reward_rows

    path = tmp_path / "grpo_rewards.csv"
    append_reward_rows(path, [{"step": 1, "reward": 0.5}, {"step": 2, "reward": 0.75}])
    append_reward_rows(path, [{"step": 3, "reward": 1.0}])
    append_reward_rows(path, [])
    assert [r["step"] for r in _rewards(tmp_path)] == [1, 2, 3]
    keep_reward_rows(path, 2)  # resumed from the checkpoint of step 2
    append_reward_rows(path, [{"step": 3, "reward": 0.25}])
    assert [(r["step"], r["reward"]) for r in _rewards(tmp_path)] == [(1, 0.5), (2, 0.75),
                                                                       (3, 0.25)]  # fmt: skip
    keep_reward_rows(path, 0)  # a new run in the folder
    assert not path.exists()


@pytest.mark.slow
def test_the_grpo_check_fails_when_the_advantages_point_the_wrong_way(
    monkeypatch, tmp_path, cache_dir
):
    """The proof above can fail: with each advantage's sign flipped (GRPO then descends the
    reward) the same run neither raises the mean reward nor the test SRCC."""
    import iqa_lightning.methods.grpo as grpo
    from tests.training import train_in_process

    flipped = grpo.group_advantages
    monkeypatch.setattr(grpo, "group_advantages", lambda *a, **k: -flipped(*a, **k))
    metrics = train_in_process(["experiment=grpo_learning"], tmp_path, cache_dir)
    rewards = [r["reward"] for r in _rewards(tmp_path)]
    first, last = rewards[:60], rewards[-60:]
    assert not sum(last) / len(last) > sum(first) / len(first) + 0.05, (first, last)
    assert not metrics["test/srcc"] > metrics["zeroshot/srcc"] + 0.1, metrics
