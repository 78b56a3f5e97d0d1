"""Progressive tuning: LoRA (stage 1), the Q-Adapt prompter (stage 2), and the switch between them."""

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
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}


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
        assert torch.equal(tensor, dict(module.named_parameters())[name].detach())
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


ALL_FAMILIES = [build_tiny_llava, build_tiny_qwen2_vl, build_tiny_qwen2_5_vl]


@pytest.mark.parametrize("build", ALL_FAMILIES)
def test_gate_cross_attention_and_queries_receive_gradients(build):
    module = make(build, lora=None, stage_phases=[phases()[1]])
    side = module.backbone.image_size
    pixels = torch.rand(2, 3, side, side)
    module(pixels).sum().backward()
    prompter = module.prompter
    for part in (prompter.gate, prompter.cross_attn, prompter.qformer):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), type(part)
    assert prompter.query_tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.backbone.parameters())


@pytest.mark.parametrize("build", ALL_FAMILIES)
def test_prompter_output_depends_on_the_instruction(build):
    backbone = build()
    prompter = QADAPT(backbone=backbone).eval()
    features = torch.randn(2, 64, backbone.vision_feature_dim)
    with prompter.conditioned(["Rate the quality.", "Rate the quality."]):
        same = prompter.adapt(features)
    with prompter.conditioned(["Rate the quality.", "Which distortion is there?"]):
        other = prompter.adapt(features)
    # The two batches pad the instructions to different lengths: the padded positions are masked
    # out, so image 0 gets the same output up to float rounding, while image 1's changes.
    torch.testing.assert_close(same[0], other[0], atol=1e-6, rtol=1e-6)
    assert (same[1] - other[1]).abs().max() > 1e-5


@pytest.mark.parametrize("build", ALL_FAMILIES)
def test_prompter_does_not_depend_on_the_order_of_the_vision_tokens(build):
    # Qwen2.5-VL hands the merger its patches in window order, not raster order: the prompter
    # must give each token the same output whatever order the tokens come in.
    backbone = build()
    prompter = QADAPT(backbone=backbone).eval()
    features = torch.randn(1, 64, backbone.vision_feature_dim)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    with prompter.conditioned(["Rate the quality."]):
        plain = prompter.adapt(features)
        shuffled = prompter.adapt(features[:, order])
    torch.testing.assert_close(shuffled, plain[:, order], atol=1e-5, rtol=1e-5)


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


def test_qformer_loads_from_an_instructblip_checkpoint(tmp_path):
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    backbone = build_tiny_llava()
    tokenizer = backbone.tokenizer
    config = InstructBlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "encoder_hidden_size": 32,
                        "vocab_size": len(tokenizer)},
        text_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 4,
                     "vocab_size": len(tokenizer)},
        num_query_tokens=6,
    )  # fmt: skip
    torch.manual_seed(0)
    reference = InstructBlipForConditionalGeneration(config)
    reference.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path / "qformer_tokenizer")

    prompter = QAdaptPrompt(backbone, qformer_pretrained=str(tmp_path), num_heads=4)
    assert prompter.query_tokens.shape == (1, 6, 32)
    assert torch.equal(prompter.query_tokens.detach(), reference.query_tokens.detach())
    for name, tensor in reference.qformer.state_dict().items():
        assert torch.equal(prompter.qformer.state_dict()[name], tensor), name
    features = torch.randn(2, 64, backbone.vision_feature_dim)
    with prompter.conditioned(["Rate the quality.", "Is it blurry?"]):
        assert prompter.adapt(features).shape == features.shape
    with pytest.raises(FileNotFoundError, match="prompt.qformer_pretrained"):
        QAdaptPrompt(backbone, qformer_pretrained=str(tmp_path / "missing"))
