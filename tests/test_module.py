"""The LightningModule: parameter groups, frozen backbone, checkpoints with trainable tensors only."""

from functools import partial

import lightning as L
import pytest
import torch

from iqa_lightning.data import SyntheticDataModule
from iqa_lightning.models.backbones import build_tiny_llava, build_tiny_qwen2_vl
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
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
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
