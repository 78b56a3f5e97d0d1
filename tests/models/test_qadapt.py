"""The Q-Adapt prompter (V-T Generator + T-V Prompter) and its recipe presets."""

import subprocess
import sys
from functools import partial

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from iqa_lightning.models.backbones import (
    build_tiny_llava,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
)
from iqa_lightning.models.prompts import QAdaptPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.module import IQAModule
from iqa_lightning.train import CONFIG_DIR, quote_numeric_choices
from tests.conftest import REPO

# Small sizes (as prompt=qadapt_tiny), so the tests stay fast.
QADAPT = partial(QAdaptPrompt, num_queries=4, hidden_size=32, num_layers=1, num_heads=4,
                 encoder_width=32, gate_hidden=64)  # fmt: skip
ALL_FAMILIES = [build_tiny_llava, build_tiny_qwen2_vl, build_tiny_qwen2_5_vl]
ADAM = partial(torch.optim.AdamW, lr=1e-2)


def make(build=build_tiny_llava, prompt=QADAPT):
    return IQAModule(
        build(),
        prompt,
        WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0]),
        phases=[{"name": "stage2", "trainable": ["prompt"], "epochs": None, "optimizer": ADAM}],
    )


def save_tiny_instructblip(folder, tokenizer):
    """A random InstructBLIP in HF's layout, with its Q-Former tokenizer beside it."""
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

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
    with torch.no_grad():  # ln_vision away from its (1, 0) init, so loading it is checked
        for param in reference.vision_model.post_layernorm.parameters():
            param.normal_()
    reference.save_pretrained(folder)
    tokenizer.save_pretrained(folder / "qformer_tokenizer")
    return reference


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("instructblip")
    return folder, save_tiny_instructblip(folder, build_tiny_llava().tokenizer)


# ------------------------------------------------------------------ behaviour on every family
@pytest.mark.parametrize("build", ALL_FAMILIES)
def test_gate_cross_attention_and_queries_receive_gradients(build):
    module = make(build)
    side = module.backbone.image_size
    pixels = torch.rand(2, 3, side, side)
    module(pixels).sum().backward()
    prompter = module.prompter
    parts = (prompter.gate, prompter.cross_attn, prompter.qformer, prompter.query_out,
             prompter.feature_in, prompter.ln_vision, prompter.norm)  # fmt: skip
    for part in parts:
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


# ------------------------------------------------------------------ the reference's build
def test_reference_defaults_build_the_reference_prompter():
    backbone = build_tiny_llava()
    dim = backbone.vision_feature_dim
    prompter = QAdaptPrompt(backbone).eval()
    # V-T Generator: InstructBLIP's Q-Former (BERT-base), 32 queries, over Linear(D -> 1408)
    # and ln_vision.
    config = prompter.qformer.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == (
        12,
        12,
        768,
    )
    assert (config.intermediate_size, config.encoder_hidden_size) == (3072, 1408)
    with_cross = [i for i, layer in enumerate(prompter.qformer.encoder.layer)
                  if hasattr(layer, "crossattention")]  # fmt: skip
    assert with_cross == [0, 2, 4, 6, 8, 10]
    assert prompter.query_tokens.shape == (1, 32, 768)
    assert (prompter.feature_in.in_features, prompter.feature_in.out_features) == (dim, 1408)
    assert prompter.ln_vision.normalized_shape == (1408,) and prompter.ln_vision.eps == 1e-5
    assert (prompter.query_out.in_features, prompter.query_out.out_features) == (768, dim)
    assert prompter.max_instruction_tokens == 256 and prompter.tokenizer.truncation_side == "left"
    assert prompter.drop_first_token is False  # LLaVA's "default" features have no class token
    # T-V Prompter: one head, keys and values at the vision width; gate LN -> 2048 -> ReLU ->
    # dropout 0.1 -> 1; output LayerNorm; scale 0.1.
    attn = prompter.cross_attn
    assert (attn.num_heads, attn.embed_dim, attn.kdim, attn.vdim) == (1, dim, dim, dim)
    norm, hidden, act, drop, out = prompter.gate
    assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (2 * dim,)
    assert (hidden.in_features, hidden.out_features, out.out_features) == (2 * dim, 2048, 1)
    assert isinstance(act, nn.ReLU) and drop.p == 0.1
    assert isinstance(prompter.norm, nn.LayerNorm) and prompter.norm.normalized_shape == (dim,)
    assert float(prompter.scale) == pytest.approx(0.1)
    # Nothing frozen in a random Q-Former: it trains whole.
    assert prompter.frozen == []

    features = torch.randn(2, 64, dim)
    with torch.no_grad(), prompter.conditioned(["Rate the quality.", "Is it blurry?"]):
        queries = prompter.generate_queries(features)
        prompt, gate = prompter.prompt_tokens(features, queries)
        adapted = prompter.adapt(features)
    assert queries.shape == (2, 32, 768)
    assert gate.shape == (2, 64, 1) and bool(((gate > 0) & (gate < 1)).all())
    assert prompt.shape == features.shape
    # The output LayerNorm (weight 1, bias 0 at init): every token has mean 0 and variance 1.
    torch.testing.assert_close(prompt.mean(-1), torch.zeros(2, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(prompt.var(-1, unbiased=False), torch.ones(2, 64), atol=1e-3, rtol=0)
    torch.testing.assert_close(adapted, features + 0.1 * prompt)


def test_qformer_loads_from_an_instructblip_checkpoint(instructblip):
    folder, reference = instructblip
    backbone = build_tiny_llava()
    prompter = QAdaptPrompt(backbone, qformer_pretrained=str(folder), num_heads=4)
    assert prompter.query_tokens.shape == (1, 6, 32)
    assert torch.equal(prompter.query_tokens.detach(), reference.query_tokens.detach())
    for name, tensor in reference.qformer.state_dict().items():
        assert torch.equal(prompter.qformer.state_dict()[name], tensor), name
    # LAVIS's ln_vision is HF's vision_model.post_layernorm.
    post = reference.vision_model.post_layernorm
    assert torch.equal(prompter.ln_vision.weight.detach(), post.weight.detach())
    assert torch.equal(prompter.ln_vision.bias.detach(), post.bias.detach())
    assert prompter.feature_in.out_features == reference.config.qformer_config.encoder_hidden_size
    features = torch.randn(2, 64, backbone.vision_feature_dim)
    with prompter.conditioned(["Rate the quality.", "Is it blurry?"]):
        assert prompter.adapt(features).shape == features.shape
    with pytest.raises(FileNotFoundError, match="prompt.qformer_pretrained"):
        QAdaptPrompt(backbone, qformer_pretrained=str(folder / "missing"))


def test_checkpoint_qformer_trains_only_cross_attention_and_frozen_parts_stay_frozen(instructblip):
    folder, _ = instructblip
    module = make(prompt=partial(QAdaptPrompt, qformer_pretrained=str(folder), num_heads=4))
    prompter = module.prompter
    group = set(module.parameter_groups()["prompter"])
    qformer = {n for n in group if n.startswith("prompter.qformer.")}
    # As train_addqformer_stage2.py:470-473 ("freeze_part"): the Q-Former trains its
    # cross-attention only; queries, ln_vision, the in/out projections and the T-V Prompter train.
    assert qformer and all(".crossattention." in n for n in qformer)
    assert {n.split(".")[1] for n in group - qformer} == {
        "query_tokens", "feature_in", "ln_vision", "query_out", "cross_attn", "gate", "norm",
    }  # fmt: skip
    frozen = {f"qformer.{n}" for n in prompter.frozen}
    assert "qformer.embeddings.word_embeddings.weight" in frozen
    assert "qformer.encoder.layer.0.attention.attention.query.weight" in frozen
    assert any("intermediate_query" in n for n in frozen)
    assert not any("crossattention" in n for n in frozen)
    assert all(p.requires_grad for p in prompter.parameters())  # exactly the group trains

    state = prompter.state_dict()
    before = {n: state[n].clone() for n in frozen}
    cross_before = {n: p.detach().clone() for n, p in prompter.named_parameters() if "cross" in n}
    optimizer = module.configure_optimizers()
    side = module.backbone.image_size
    for _ in range(2):
        optimizer.zero_grad()
        module(torch.rand(2, 3, side, side)).sum().backward()
        optimizer.step()
    after = prompter.state_dict()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    moved = [n for n, p in prompter.named_parameters() if n in cross_before
             and not torch.equal(p.detach(), cross_before[n])]  # fmt: skip
    assert any(n.startswith("qformer.") for n in moved)
    # The frozen tensors are none of the run's tuned tensors (they come back from the checkpoint).
    assert not set(module.tuned_state_dict()) & {f"prompter.{n}" for n in frozen}


@pytest.mark.parametrize("trainable,expect", [("all", "all"), ("none", "none")])
def test_qformer_trainable_knob(instructblip, trainable, expect):
    folder, _ = instructblip
    prompter = QAdaptPrompt(build_tiny_llava(), qformer_pretrained=str(folder),
                            qformer_trainable=trainable)  # fmt: skip
    qformer = [n for n, _ in prompter.qformer.named_parameters()]
    assert bool(qformer) == (expect == "all")
    with pytest.raises(ValueError, match="prompt.qformer_trainable"):
        QADAPT(backbone=build_tiny_llava(), qformer_trainable="some")


def test_class_token_is_dropped_only_where_the_features_have_one():
    seen = []

    def record(prompter):
        prompter.ln_vision.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))

    for strategy, drops in (("default", False), ("full", True)):
        backbone = build_tiny_llava()
        backbone.model.config.vision_feature_select_strategy = strategy
        prompter = QADAPT(backbone=backbone)
        assert prompter.drop_first_token is drops
    record(prompter)
    qwen = QADAPT(backbone=build_tiny_qwen2_vl())
    assert qwen.drop_first_token is False
    literal = QADAPT(backbone=build_tiny_qwen2_vl(), drop_first_token=True)  # the reference's
    assert literal.drop_first_token is True
    features = torch.randn(1, 65, prompter.norm.normalized_shape[0])
    with prompter.conditioned(["Rate the quality."]):
        assert prompter.adapt(features).shape == features.shape  # every token gets a prompt
    assert seen == [64]  # the Q-Former saw the patches only


def test_instructions_are_cleaned_and_truncated_on_the_left():
    backbone = build_tiny_llava()
    sides = (backbone.tokenizer.padding_side, backbone.tokenizer.truncation_side)
    prompter = QADAPT(backbone=backbone, max_instruction_tokens=8)
    # The Q-Former's tokenizer is its own: the backbone's keeps its sides.
    assert (backbone.tokenizer.padding_side, backbone.tokenizer.truncation_side) == sides
    assert prompter.clean("<image>\nHow is the\nclarity?") == "How is theclarity?"
    text = "Rate the quality of this image, looking at noise, blur and the colours."
    full = prompter.tokenizer(text).input_ids
    with prompter.conditioned([text]):
        ids = prompter._instruction[0][0].tolist()
    assert len(ids) == 8 < len(full) and ids[-3:] == full[-3:]


# ------------------------------------------------------------------ presets
def compose_train(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=quote_numeric_choices(overrides))


def check_phase(phase, trainable):
    assert list(phase.trainable) == trainable
    assert phase.optimizer._target_ == "torch.optim.AdamW"
    assert (phase.optimizer.lr, phase.optimizer.weight_decay) == (2e-4, 0.0)
    assert phase.lr.projector == 2e-5
    assert phase.scheduler._target_ == "transformers.get_cosine_schedule_with_warmup"
    assert (phase.warmup_ratio, phase.scheduler_interval) == (0.03, "step")


def check_recipe(cfg, epochs):
    assert cfg.instruct.batch_size * cfg.trainer.accumulate_grad_batches == 32
    # zero2.json sets no gradient_clipping: the reference trains unclipped.
    assert cfg.trainer.max_epochs == epochs and cfg.trainer.gradient_clip_val is None
    assert list(cfg.stage.tasks) == ["instruct"]
    assert dict(cfg.instruct.mixture) == {"instruct": 1.0, "score": 0.0}  # next-token loss only
    assert cfg.instruct.name == "qinstruct"
    assert cfg.model.pretrained == "BAAI/Bunny-v1_0-3B"  # the paper's base


def test_qadapt_stage2_preset_cfg_job():
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=qadapt_stage2", "--cfg", "job"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = OmegaConf.create(proc.stdout)
    check_recipe(cfg, epochs=1)
    (phase,) = cfg.stage.phases.values()
    check_phase(phase, ["prompt", "projector"])
    assert cfg.stage.lora is None and "init_from" in cfg.stage  # LoRA comes from stage 1
    assert cfg.prompt._target_.endswith("QAdaptPrompt") and cfg.prompt.gate_hidden == 2048
    assert cfg.instruct.batch_size == 8 and cfg.trainer.accumulate_grad_batches == 4


def test_qadapt_stage1_and_progressive_presets():
    cfg = compose_train(["experiment=qadapt_stage1"])
    check_recipe(cfg, epochs=1)
    (phase,) = cfg.stage.phases.values()
    check_phase(phase, ["lora", "projector"])
    assert cfg.prompt._target_.endswith("NoPrompt")
    lora = cfg.stage.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.vision) == (128, 256, 0.05, False)
    # Every linear layer of the language model, lm_head not (train.py:140-153 there).
    from iqa_lightning.models.lora import add_lora

    backbone = build_tiny_llava()
    (path,) = [n for n, m in backbone.model.named_modules() if m is backbone.language_model()]
    names = {n for n, m in backbone.model.named_modules() if isinstance(m, nn.Linear)}
    language = {n for n in names if n.startswith(f"{path}.")}
    adapted = add_lora(backbone, r=2, alpha=4, target_modules=lora.target_modules)
    assert set(adapted) == language and not any("lm_head" in n for n in adapted)

    cfg = compose_train(["experiment=qadapt_progressive"])
    check_recipe(cfg, epochs=2)
    first, second = cfg.stage.phases.values()
    check_phase(first, ["lora", "projector"])
    check_phase(second, ["prompt", "projector"])
    assert (first.epochs, second.epochs) == (1, 1)
    assert cfg.stage.lora.r == 128 and cfg.prompt._target_.endswith("QAdaptPrompt")


def test_qadapt_tiny_preset_is_small():
    from hydra.utils import instantiate

    cfg = compose_train(["model=tiny_llava", "prompt=qadapt_tiny"])
    assert cfg.prompt_optimizer._target_ == "torch.optim.AdamW"
    prompter = instantiate(cfg.prompt)(backbone=build_tiny_llava())
    assert sum(p.numel() for p in prompter.parameters()) < 200_000
