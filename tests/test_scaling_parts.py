"""Parts for scale: gradient checkpointing, half precision, FSDP units, unpadded evaluation
shards, the Slurm launcher config."""

from functools import partial

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from iqa_lightning.data import SyntheticDataModule
from iqa_lightning.models.backbones import build_tiny_llava, build_tiny_qwen2_vl
from iqa_lightning.models.backbones.blocks import block_classes, blocks, fsdp_wrap_targets
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule
from iqa_lightning.precision import LabelSafeHalfPrecision
from iqa_lightning.strategies import unpadded_eval_loader
from iqa_lightning.train import CONFIG_DIR

BUILDS = [build_tiny_llava, build_tiny_qwen2_vl]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def make(backbone, trainable=("prompt",), lora=None):
    torch.manual_seed(0)
    return IQAModule(
        backbone,
        PaddingPrompt(backbone.image_size, size=8, init_scale=0.5),
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=[{"name": "s", "trainable": list(trainable), "epochs": None,
                 "optimizer": partial(torch.optim.SGD, lr=1.0)}],
        lora=lora,
    )  # fmt: skip


@pytest.mark.parametrize("build", BUILDS)
def test_gradient_checkpointing_recomputes_and_gives_identical_gradients(build):
    grads, calls = [], []
    for checkpointing in (False, True):
        module = make(build(gradient_checkpointing=checkpointing), ("prompt", "lora"), LORA)
        module.train()
        assert module.backbone.model.training is False  # dropout stays off
        inner = next(next(blocks(module.backbone.model)).children())
        count = []
        inner.register_forward_hook(lambda *_, count=count: count.append(1))
        pixels = torch.rand(3, 3, module.backbone.image_size, module.backbone.image_size,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
        module(pixels).square().sum().backward()
        grads.append({n: p.grad for n, p in module.scorer.named_parameters() if p.requires_grad})
        calls.append(len(count))
    assert calls == [1, 2], "checkpointed blocks run their forward again in backward"
    assert set(grads[0]) == set(grads[1]) and any(".lora_" in n for n in grads[0])
    for name, grad in grads[0].items():
        assert grad is not None and torch.equal(grad, grads[1][name]), name


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_half_precision_keeps_labels_scores_and_losses_fp32(precision, cache_dir):
    module = make(build_tiny_llava())
    seen = {}
    score_forward = module.score.forward

    def spy_score(logits):
        seen["score"] = score_forward(logits).dtype
        return score_forward(logits)

    module.score.forward = spy_score

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.update(loss=outputs["loss"].dtype, target=batch["target"].dtype,
                        pixels=batch["pixels"].dtype)  # fmt: skip

    half = precision.endswith("true")
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=0,
        limit_test_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Spy()],
        precision=None if half else precision,
        plugins=[LabelSafeHalfPrecision(precision)] if half else None,
    )  # fmt: skip
    data = SyntheticDataModule(cache_dir=cache_dir, n_refs=4, image_size=64, batch_size=4)
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    assert seen["score"] == seen["loss"] == seen["target"] == torch.float32
    assert seen["pixels"] == (torch.bfloat16 if half else torch.float32)
    data.setup("test")
    labels = {r.image_id: float(r.mos_raw) for r in data.records("test")}
    for row in module.test_rows:  # raw MOS exact, not rounded to bf16
        assert row["mos_raw"] == pytest.approx(labels[row["image_id"]], abs=1e-5)


def fsdp_units(root, targets):
    """Each unit's own parameters (those not inside a nested unit), root unit included."""
    units = {}

    def walk(module, unit):
        if module in targets:
            unit = module
        for param in module.parameters(recurse=False):
            units.setdefault(id(unit), []).append(param)
        for child in module.children():
            walk(child, unit)

    walk(root, root)
    return units


@pytest.mark.parametrize("build", BUILDS)
def test_fsdp_units_are_blocks_and_never_mix_frozen_with_trainable(build):
    module = make(build(), ("prompt", "lora"), LORA)
    classes = block_classes(module.backbone)
    expected = {
        "build_tiny_llava": {"LlamaDecoderLayer", "CLIPEncoderLayer"},
        "build_tiny_qwen2_vl": {"Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"},
    }[build.__name__]
    assert {c.__name__ for c in classes} == expected
    targets = fsdp_wrap_targets(module, classes)
    assert set(blocks(module.backbone)) <= targets and module.prompt in targets
    assert sum(".lora_" in n for n, m in module.named_modules() if m in targets) > 0
    for params in fsdp_units(module, targets).values():
        assert len({p.requires_grad for p in params}) == 1
        assert len({p.dtype for p in params}) == 1


def test_evaluation_shards_cover_an_odd_split_exactly_once():
    dataset = list(range(35))
    seen = []
    for rank in range(2):
        padded = DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, 2, rank))
        loader = unpadded_eval_loader(padded, num_replicas=2, rank=rank)
        seen += [int(i) for batch in loader for i in batch]
    assert sorted(seen) == dataset
    with pytest.raises(ValueError, match="trainer.devices"):
        unpadded_eval_loader(DataLoader([0], sampler=DistributedSampler([0], 2, 0)), 2, 0)


def test_slurm_launcher_config_asks_one_task_per_gpu(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                     "trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)


@pytest.mark.parametrize("preset", ["cpu", "ddp_sim"])
def test_trainer_presets_use_safe_checkpoints_and_label_safe_half_precision(preset, tmp_path):
    from iqa_lightning.checkpoints import SafeCheckpointIO
    from iqa_lightning.precision import LabelSafeFSDPPrecision, label_safe_precision
    from iqa_lightning.strategies import DDPStrategy
    from iqa_lightning.train import build_trainer

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = [f"trainer={preset}", "trainer.precision=bf16-true",
                     f"paths.output_dir={tmp_path}", "logger=none"]  # fmt: skip
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    trainer = build_trainer(cfg, callbacks=[], loggers=[])
    assert isinstance(trainer.precision_plugin, LabelSafeHalfPrecision)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    assert isinstance(trainer.strategy, DDPStrategy) == (preset == "ddp_sim")
    assert isinstance(label_safe_precision("bf16-true", fsdp=True), LabelSafeFSDPPrecision)
