"""Progressive tuning: LoRA (stage 1), the Q-Adapt prompter (stage 2), and the switch between them.

The prompter on its own: tests/models/test_qadapt.py.
"""

from functools import partial

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from iqa_lightning.callbacks import StageSchedule
from iqa_lightning.data import SyntheticDataModule
from iqa_lightning.models.backbones import (
    build_tiny_llava,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
)
from iqa_lightning.models.lora import add_lora
from iqa_lightning.models.prompts import NoPrompt, QAdaptPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule

QADAPT = partial(QAdaptPrompt, num_queries=4, hidden_size=32, num_layers=1, num_heads=4)
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def phases(stage1_epochs=1):
    adam = partial(torch.optim.AdamW, lr=1e-2)
    return [
        {"name": "stage1", "trainable": ["lora"], "epochs": stage1_epochs, "optimizer": adam},
        {"name": "stage2", "trainable": ["prompt"], "epochs": None, "optimizer": adam},
    ]


def make(build=build_tiny_llava, prompt=QADAPT, lora=LORA, stage_phases=None):
    return IQAModule(
        build(),
        prompt,
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=stage_phases or phases(),
        lora=lora,
    )


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.scorer.named_parameters()}


def changed(before, module):
    return {n for n, p in module.scorer.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("build", [build_tiny_llava, build_tiny_qwen2_vl])
def test_progressive_run_changes_only_each_stage_groups(build, cache_dir, tmp_path):
    module = make(build)
    groups = module.parameter_groups()
    assert module.trainable_groups == ["lora"]
    dm = SyntheticDataModule(cache_dir=cache_dir, n_refs=5, image_size=module.backbone.image_size,
                             batch_size=8, seed=1)  # fmt: skip
    start = snapshot(module)

    class Probe(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                self.after_stage1 = snapshot(pl_module)

    probe = Probe()
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path,
        callbacks=[StageSchedule(str(tmp_path)), probe],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)

    # Stage 1 changed the LoRA tensors (all of them) and nothing else.
    stage1 = {n for n, p in probe.after_stage1.items() if not torch.equal(p, start[n])}
    assert stage1 == set(groups["lora"])
    # Stage 2 changed only the prompter and left the stage-1 LoRA bit-identical.
    stage2 = changed(probe.after_stage1, module)
    assert stage2 and stage2 <= set(groups["prompter"])
    saved = load_file(tmp_path / "checkpoints" / "stage1" / "trainable.safetensors")
    assert set(saved) == set(groups["lora"])
    for name, tensor in saved.items():
        assert torch.equal(tensor, dict(module.scorer.named_parameters())[name].detach())
    assert module.phase["name"] == "stage2" and module.trainable_groups == ["prompter"]


def test_projector_group_and_per_group_learning_rates():
    stage = [{"name": "stage1", "trainable": ["lora", "projector"], "epochs": None,
              "lr": {"projector": 2e-5}, "optimizer": partial(torch.optim.AdamW, lr=2e-4)}]  # fmt: skip
    module = make(prompt=NoPrompt(), stage_phases=stage)
    optimizer = module.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"lora": 2e-4, "projector": 2e-5}
    projector = {f"backbone.{n}" for n, _ in module.backbone.named_parameters() if "projector" in n}
    assert set(module.parameter_groups()["projector"]) == projector
    assert all(p.requires_grad for p in module.backbone.projector().parameters())


def test_qwen2_5_vl_feature_width_and_window_order():
    backbone = build_tiny_qwen2_5_vl()
    vision = backbone.model.config.vision_config
    assert not hasattr(vision, "embed_dim")
    assert backbone.vision_feature_dim == vision.hidden_size
    seen = []

    def record(features):
        seen.append(features.detach().clone())
        return features

    pixels = torch.rand(1, 3, backbone.image_size, backbone.image_size)
    ids = backbone.encode_prompt("Rate the quality.")
    with torch.no_grad(), backbone.feature_hook(record):
        backbone.next_token_logits(pixels, ids)
    side = backbone.image_size // vision.patch_size
    assert seen[0].shape == (1, side * side, vision.hidden_size)


@pytest.mark.parametrize("build", [build_tiny_llava, build_tiny_qwen2_vl])
def test_vision_lora_really_trains(build):
    backbone = build()
    names = add_lora(backbone, r=2, alpha=4, vision=True)
    vision_path = (
        "vision_tower"
        if "vision_tower" in names[0] or any("vision_tower" in n for n in names)
        else "visual"
    )
    assert any(vision_path in n for n in names)
    for n, p in backbone.named_parameters():
        p.requires_grad_(".lora_B" in n or ".lora_A" in n)
    ids = backbone.encode_prompt(
        "Rate the technical quality of the image.", "The quality of the image is"
    )
    pixels = torch.rand(2, 3, backbone.image_size, backbone.image_size)
    # lora_B starts at zero, so only lora_B gets a gradient on the first step; it must be nonzero
    # for the vision tower's adapters too (no no_grad around the vision tower).
    backbone.next_token_logits(pixels, ids).logsumexp(-1).sum().backward()
    # LLaVA reads the second-to-last vision layer (vision_feature_layer=-2): the last one is unused.
    vision_b = [
        p
        for n, p in backbone.named_parameters()
        if vision_path in n
        and ".lora_B" in n
        and (build is build_tiny_qwen2_vl or ".layers.0." in n)
    ]
    assert vision_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in vision_b)


def test_lora_targets_that_match_nothing_are_named():
    with pytest.raises(ValueError, match="stage.lora.target_modules"):
        add_lora(build_tiny_llava(), target_modules=["no_such_layer"])


def test_init_from_tensors_reproduce_the_stage1_outputs():
    stage1 = make(prompt=NoPrompt(), stage_phases=[phases()[0]])
    with torch.no_grad():
        for param in stage1.parameter_groups()["lora"].values():
            param.add_(torch.randn_like(param) * 0.05)
    tuned = stage1.tuned_state_dict()
    fresh = make(prompt=NoPrompt(), stage_phases=[phases()[0]])
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(fresh(pixels), stage1(pixels))
        fresh.load_tuned(tuned)
        torch.testing.assert_close(fresh(pixels), stage1(pixels), rtol=0, atol=0)
    with pytest.raises(KeyError, match="missing"):
        fresh.load_tuned({})


def test_init_from_a_folder_whose_config_names_no_phases_is_one_line(tmp_path):
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from iqa_lightning.methods import stage_one_from
    from iqa_lightning.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    folder.config.parent.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"stage": {"name": "x"}}), folder.config)
    folder.tuned.parent.mkdir(parents=True, exist_ok=True)
    save_file({}, str(folder.tuned))
    with pytest.raises(ValueError, match=r"names no phases \(module.phases, method.phases"):
        stage_one_from(tmp_path)
