"""Phases and the plan: typed entries, epoch -> phase, the scheduler contract."""

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from iqa_lightning.phases import Phase, PhasePlan


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def groups():
    return {
        "lora": {"a": torch.nn.Parameter(torch.zeros(2))},
        "projector": {"b": torch.nn.Parameter(torch.zeros(3))},
    }


def test_phase_from_a_config_entry_reads_like_it():
    entry = OmegaConf.create(
        {"name": "stage1", "trainable": ["lora"], "epochs": 2, "lr": {"lora": 1e-3}}
    )
    phase = Phase.from_config({**entry, "optimizer": sgd})
    assert phase.trainable == ("lora",) and phase.epochs == 2 and phase.lr == {"lora": 1e-3}
    assert phase["name"] == "stage1" and phase.get("warmup_ratio") == 0.0
    assert phase.scheduler_interval == "epoch"
    with pytest.raises(ValueError, match="unknown keys \\['lrs'\\]"):
        Phase.from_config({"name": "x", "trainable": ["lora"], "optimizer": sgd, "lrs": {}})
    with pytest.raises(ValueError, match="missing keys \\['trainable'\\]"):
        Phase.from_config({"name": "x"})
    with pytest.raises(ValueError, match="give it an optimizer"):
        Phase.from_config({"name": "x", "trainable": ["lora"]})
    assert Phase.from_config({"name": "zero_shot", "trainable": []}).optimizer is None
    with pytest.raises(ValueError, match="scheduler_interval"):
        Phase("x", ("lora",), sgd, scheduler_interval="batch")
    with pytest.raises(ValueError, match="empty"):
        PhasePlan([])


def test_epochs_map_to_phases_in_order():
    plan = PhasePlan(
        [Phase("a", ("lora",), sgd, epochs=2), Phase("b", ("projector",), sgd, epochs=1),
         Phase("c", ("lora",), sgd)]
    )  # fmt: skip
    assert [plan.index_for_epoch(e) for e in range(6)] == [0, 0, 1, 2, 2, 2]
    assert [p.name for p in plan] == ["a", "b", "c"] and len(plan) == 3


def test_step_schedulers_get_warmup_and_training_steps_by_name():
    calls = []

    def schedule(optimizer, *, num_warmup_steps, num_training_steps):
        calls.append((num_warmup_steps, num_training_steps))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    phase = Phase(
        "a", ("lora", "projector"), sgd, epochs=1, scheduler=schedule, warmup_ratio=0.1,
        scheduler_interval="step", lr={"projector": 0.01},
    )  # fmt: skip
    out = PhasePlan([phase, Phase("b", ("lora",), sgd)]).configure(
        0, groups(), total_steps=400, max_epochs=2
    )
    assert calls == [(20, 200)]  # the phase's share of the run's steps: 1 of 2 epochs
    assert out["lr_scheduler"]["interval"] == "step"
    lrs = {g["name"]: g["lr"] for g in out["optimizer"].param_groups}
    assert lrs == {"lora": 0.1, "projector": 0.01}


def test_epoch_schedulers_get_the_optimizer_only():
    step_lr = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    out = PhasePlan([Phase("a", ("lora",), sgd, scheduler=step_lr)]).configure(
        0, {"lora": groups()["lora"]}
    )
    assert isinstance(out["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert out["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(
        PhasePlan([Phase("a", ("lora",), sgd)]).configure(0, groups()), torch.optim.SGD
    )
