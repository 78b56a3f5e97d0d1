"""The LightningModule: parameter groups, frozen backbone, checkpoints with trainable tensors only."""

import csv
import dataclasses
from functools import partial

import lightning as L
import pytest
import torch

from iqa_lightning.callbacks import PredictionWriter
from iqa_lightning.data import SyntheticDataModule
from iqa_lightning.models.backbones import build_tiny_llava, build_tiny_qwen2_vl
from iqa_lightning.models.lora import lora_parameters, projector_parameters
from iqa_lightning.models.prompts import NoPrompt, PaddingPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule


def phase(name="stage2", trainable=("prompt",), epochs=None, lr=60.0):
    return {
        "name": name,
        "trainable": list(trainable),
        "epochs": epochs,
        "optimizer": partial(torch.optim.SGD, lr=lr, momentum=0.9),
    }


def make_module(backbone, prompt=None, trainable=("prompt",), phases=None, lora=None):
    return IQAModule(
        backbone,
        prompt if prompt is not None else PaddingPrompt(backbone.image_size, size=8),
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=phases or [phase(trainable=trainable)],
        lora=lora,
    )


def datamodule(cache_dir, image_size):
    return SyntheticDataModule(
        cache_dir=cache_dir, n_refs=5, image_size=image_size, batch_size=8, seed=1
    )


def test_only_prompt_parameters_require_grad():
    module = make_module(build_tiny_llava())
    trainable = {n for n, p in module.scorer.named_parameters() if p.requires_grad}
    assert trainable == {"prompt.pad_up", "prompt.pad_down", "prompt.pad_left", "prompt.pad_right"}
    assert module.num_trainable() == 3 * (64**2 - 48**2)


def test_unknown_group_and_empty_model_are_named():
    with pytest.raises(ValueError, match="stage.phases"):
        make_module(build_tiny_llava(), trainable=("lora",))
    with pytest.raises(ValueError, match="prompt=none"):
        make_module(build_tiny_llava(), prompt=NoPrompt(64))


@pytest.mark.parametrize("build", [build_tiny_llava, build_tiny_qwen2_vl])
def test_training_moves_the_prompt_and_leaves_the_backbone_bit_identical(
    build, cache_dir, tmp_path
):
    backbone = build()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    module = make_module(backbone)
    prompt_before = {k: v.clone() for k, v in module.prompt.state_dict().items()}
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt")],
    )
    trainer.fit(module, datamodule=datamodule(cache_dir, backbone.image_size))
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not backbone.model.training
    moved = [not torch.equal(v, module.prompt.state_dict()[k]) for k, v in prompt_before.items()]
    assert all(moved)

    ckpt_file = next((tmp_path / "ckpt").glob("*.ckpt"))
    ckpt = torch.load(ckpt_file, weights_only=True)
    assert set(ckpt["state_dict"]) == set(module.trainable_state_dict())
    # Loading the checkpoint into a fresh module restores the prompt exactly.
    fresh = make_module(build())
    fresh.load_state_dict(ckpt["state_dict"], strict=False)
    for key, value in module.prompt.state_dict().items():
        assert torch.equal(fresh.prompt.state_dict()[key], value)


def test_validation_metrics_are_logged_over_the_whole_split(cache_dir, tmp_path):
    module = make_module(build_tiny_llava())
    dm = datamodule(cache_dir, 64)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    metrics = trainer.callback_metrics
    for key in ("val/srcc", "val/plcc", "val/krcc", "val/srcc_best", "val/srcc_plcc"):
        assert key in metrics
    trainer.test(module, datamodule=dm)
    assert len(module.test_rows) == len(dm.test_dataloader().dataset)
    assert {"test/srcc", "test/plcc", "test/krcc"} <= set(trainer.callback_metrics)


def declared(module, groups):
    """Full names of the parameters the parts declare for ``groups``."""
    names = set()
    for group in groups:
        if group == "lora":
            names |= {f"backbone.{n}" for n in lora_parameters(module.backbone)}
        elif group == "projector":
            names |= {f"backbone.{n}" for n in projector_parameters(module.backbone)}
        else:
            part = getattr(module, group)
            assert part.group == group
            names |= {f"{group}.{n}" for n in part.trainable_parameters()}
    return names


@pytest.mark.parametrize("trainable", [("prompt",), ("lora",), ("prompt", "projector")])
def test_frozen_stays_frozen(trainable, cache_dir, tmp_path):
    """Whatever the current phase's groups do not declare is frozen and bit-identical."""
    module = make_module(
        build_tiny_llava(), trainable=trainable, lora={"r": 2, "alpha": 4, "dropout": 0.0}
    )
    module.phases[0] = dataclasses.replace(
        module.phases[0], optimizer=partial(torch.optim.SGD, lr=1.0)
    )
    train = declared(module, trainable)
    assert set().union(*(module.parameter_groups()[g] for g in trainable)) == train
    assert {n for n, p in module.scorer.named_parameters() if p.requires_grad} == train
    before = {n: p.detach().clone() for n, p in module.scorer.named_parameters()}
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
        logger=False, enable_progress_bar=False, enable_checkpointing=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule(cache_dir, 64))
    moved = set()
    for name, param in module.scorer.named_parameters():
        if name in train:
            moved |= {name} if not torch.equal(param, before[name]) else set()
            continue
        assert not param.requires_grad, name
        assert torch.equal(param, before[name]), name
    assert moved  # something trained
    for name, buffer in module.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_test_rows_do_not_depend_on_callback_order(cache_dir, tmp_path):
    """The module gathers its rows itself; callbacks only read them, in any order."""
    seen = {}

    class Reader(L.Callback):
        def __init__(self, key):
            self.key = key

        def on_test_end(self, trainer, pl_module):
            seen[self.key] = [dict(r) for r in pl_module.test_rows]

    module = make_module(build_tiny_llava())
    dm = datamodule(cache_dir, 64)
    for order, out in (("first", tmp_path / "a"), ("last", tmp_path / "b")):
        writer = PredictionWriter(str(out))
        callbacks = [Reader(order), writer] if order == "first" else [writer, Reader(order)]
        trainer = L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=callbacks,
            default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.test(module, datamodule=dm, verbose=False)
        with open(out / "predictions_test.csv", newline="") as f:
            written = [r["image_id"] for r in csv.DictReader(f)]
        assert written == sorted(r["image_id"] for r in seen[order])
    assert seen["first"] == seen["last"]
    assert len(seen["first"]) == len(dm.test_dataloader().dataset)
