"""Phases and the plan: typed entries, epoch -> phase, the scheduler contract."""

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from iqa_lightning.phases import (
    Phase,
    PhasePlan,
    as_named,
    by_name,
    numbered_overrides,
    phase_entries,
)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def groups():
    return {
        "lora": {"a": torch.nn.Parameter(torch.zeros(2))},
        "projector": {"b": torch.nn.Parameter(torch.zeros(3))},
    }


SGD = partial(torch.optim.SGD, lr=0.1)


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


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from iqa_lightning.build import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_phases_are_keyed_by_name_so_an_override_changes_one_phase():
    cfg = _compose(["stage=progressive", "stage.phases.stage1.epochs=1"])
    from hydra.utils import instantiate

    plan = PhasePlan(instantiate(cfg.stage.phases, _convert_="all"))
    assert [p.name for p in plan] == ["stage1", "stage2"]
    assert plan[0].epochs == 1 and plan[0].lr == {"lora": 2.0e-4, "projector": 2.0e-5}
    assert plan[1].trainable == ("prompt",)  # untouched, not restated
    # an option that inherits a stage drops a phase by name (stage 2 of perception alone)
    alone = _compose(["stage=inference"])
    assert [p["name"] for p in phase_entries(alone.stage.phases)] == ["inference"]
    dropped = _compose(["stage=progressive", "~stage.phases.stage2"])
    assert list(dropped.stage.phases) == ["stage1"]


def test_a_list_of_named_phases_still_builds_the_same_plan():
    listed = [{"name": "a", "trainable": ["prompt"], "optimizer": SGD, "epochs": 1},
              {"name": "b", "trainable": ["lora"], "optimizer": SGD}]
    keyed = {"a": {"trainable": ["prompt"], "optimizer": SGD, "epochs": 1},
             "b": {"trainable": ["lora"], "optimizer": SGD}, "c": None}
    assert PhasePlan(listed).phases == PhasePlan(keyed).phases
    with pytest.raises(ValueError, match="stage.phases.a has name 'b'"):
        PhasePlan({"a": {"name": "b", "trainable": [], "optimizer": SGD}})
    with pytest.raises(ValueError, match=r"phase name\(s\) \['a'\] used twice"):
        PhasePlan([listed[0], listed[0]])
    # a run folder written with the list form compares equal to the keyed form
    saved = {"stage": {"phases": [{"name": "a", "epochs": 1}]}, "other": [{"name": "x"}]}
    assert as_named(saved) == {"stage": {"phases": {"a": {"epochs": 1}}}, "other": [{"name": "x"}]}


def test_a_phase_named_by_its_position_is_renamed_with_a_deprecation_line(caplog):
    from iqa_lightning.train import phases_by_name

    args = ["stage=progressive", "stage.phases.0.epochs=1", "+stage.phases.1.lr.prompt=0.1"]
    with caplog.at_level("WARNING"):
        renamed = phases_by_name(args)
    assert renamed == ["stage=progressive", "stage.phases.stage1.epochs=1",
                       "+stage.phases.stage2.lr.prompt=0.1"]
    assert "phases are keyed by name: stage.phases.stage1.epochs=1" in caplog.text
    assert numbered_overrides(renamed) == []
    with pytest.raises(ValueError, match=r"stage.phases.2.epochs=1: stage.phases has 2 phase"):
        phases_by_name(["stage=progressive", "stage.phases.2.epochs=1"])
    names = {"stage.phases": ["stage1"]}
    assert by_name(["stage.phases.0=null"], names.get) == ["stage.phases.stage1=null"]
