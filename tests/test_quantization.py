"""Quantised inference (``model.quantization=int8|int4``, optimum-quanto through transformers'
``QuantoConfig``) on CPU: the trained tiny LLaVA scores the learning set as fp32 does, in less
memory; the run path, the native mPLUG-Owl2 and the errors (unknown width, a model with no
checkpoint, training, a RALI run, the library missing)."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from iqa_lightning.build import CONFIG_DIR
from iqa_lightning.errors import ConfigError
from iqa_lightning.quantization import applied, weight_bytes, with_quantization
from iqa_lightning.runs import load_run_config
from iqa_lightning.score import run_clashes
from iqa_lightning.scorer import Scorer

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def learning_test_split(cache_dir, monkeypatch, n=None):
    """Pixels and MOS of the learning set's test split (held-out photographs)."""
    monkeypatch.setenv("IQA_CACHE_DIR", str(cache_dir))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["dataset=learning", "model=tiny_llava_trained",
                                           "paths.output_dir=."])  # fmt: skip
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    pixels = torch.cat([b["pixels"] for b in batches])[:n]
    return pixels, torch.cat([b["mos_raw"] for b in batches])[:n].numpy()


def scorer(quantization=None):
    extra = [f"model.quantization={quantization}"] if quantization else []
    return Scorer.from_config(model="tiny_llava_trained", overrides=extra, accelerator="cpu")


def quantized_linears(module):
    return [m for m in module.modules() if type(m).__name__ == "QLinear"]


def test_int8_scores_the_trained_tiny_model_as_fp32_does_in_less_memory():
    images = sorted(
        [*FIXTURES.glob("runs/images/*.png"), *FIXTURES.glob("mplug_owl2_tiny/*/*.png")]
    )
    fp32, int8 = scorer(), scorer("int8")
    assert not quantized_linears(fp32.module) and len(quantized_linears(int8.module)) > 20
    ratio = weight_bytes(int8.module.backbone.model) / weight_bytes(fp32.module.backbone.model)
    assert 0.3 < ratio < 0.5  # linear weights 1 byte instead of 4; embeddings, lm_head stay fp32
    full, quantized = fp32(images), int8(images)
    assert len(images) >= 6 and (full - quantized).abs().max() < 5e-3
    assert spearmanr(full, quantized)[0] > 0.8


def test_what_cannot_be_quantised_is_refused_naming_the_key(monkeypatch):
    with pytest.raises(ConfigError, match=r"model.quantization='int3' must be one of int8, int4"):
        Scorer.from_config(model="tiny_llava_trained", overrides=["model.quantization=int3"])
    with pytest.raises(ConfigError, match=r"build_tiny_llava\) loads no checkpoint"):
        Scorer.from_config(model="tiny_llava", overrides=["model.quantization=int8"])
    training = OmegaConf.create({"model": {"_target_": "x.y", "quantization": "int8"},
                                 "module": {"phases": [{"trainable": ["prompt"]}]}})  # fmt: skip
    with pytest.raises(ConfigError, match="for scoring and evaluation"), applied(training):
        pass
    rali = OmegaConf.create({"rali_encoder": {"image_size": 64}, "model": "${rali_encoder}"})
    with pytest.raises(ConfigError, match="run=r scores without an LMM backbone"):
        with_quantization(rali, "int8", "r")
    monkeypatch.setitem(sys.modules, "optimum.quanto", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"needs optimum-quanto: pip install 'iqa-lightning\["):
        Scorer.from_config(model="tiny_llava_trained", overrides=["model.quantization=int8"])
    # python -m iqa_lightning.score run=<run> model.quantization=int8: the run's own model
    assert run_clashes(["model.quantization=int8", "score=qalign", "model.dtype=float32"]) == [
        "score=qalign", "model.dtype=float32"]  # fmt: skip


@pytest.mark.slow  # the learning set's 192 test images; fast: test_int8_scores_the_trained_...
def test_srcc_on_the_learning_set_stays_close_to_fp32(cache_dir, monkeypatch):
    pixels, mos = learning_test_split(cache_dir, monkeypatch)
    srcc = {}
    for name in (None, "int8", "int4"):
        with torch.no_grad():
            srcc[name] = spearmanr(scorer(name).module(pixels), mos)[0]
    assert abs(srcc["int8"] - srcc[None]) < 0.02 and abs(srcc["int4"] - srcc[None]) < 0.1


@pytest.mark.slow  # the fast equivalent: test_int8_scores_the_trained_tiny_model_as_fp32_does...
def test_a_run_and_the_native_mplug_owl2_score_quantised(tmp_path):
    # A run folder on the trained tiny LLaVA: the stage-2 fixture's padding prompt on it.
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "runs" / "stage2", run)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    preset = yaml.safe_load(Path(CONFIG_DIR, "model", "tiny_llava_trained.yaml").read_text())
    config["model"] = preset
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert with_quantization(load_run_config(run), "int8").model.quantization == "int8"
    images = sorted((FIXTURES / "runs" / "images").glob("*.png"))[:4]
    full = Scorer.from_run(run, accelerator="cpu")
    int8 = Scorer.from_run(run, quantization="int8", accelerator="cpu")
    assert quantized_linears(int8.module) and not quantized_linears(full.module)
    torch.testing.assert_close(int8(images), full(images), atol=5e-3, rtol=0)
    # int4 through the Scorer's Trainer (no_grad, not inference_mode: quanto's packed int4)
    int4 = Scorer.from_run(run, quantization="int4", accelerator="cpu")
    torch.testing.assert_close(int4(images), full(images), atol=2e-2, rtol=0)

    owl = FIXTURES / "mplug_owl2_tiny"
    overrides = [f"model.pretrained={owl}", "model.dtype=float32", "model.image_size=64"]
    pictures = sorted((owl / "images").glob("*.png"))
    owl_full = Scorer.from_config(model="one_align", overrides=overrides, accelerator="cpu")
    owl_int8 = Scorer.from_config(model="one_align", overrides=[*overrides,
                                  "model.quantization=int8"], accelerator="cpu")  # fmt: skip
    assert quantized_linears(owl_int8.module)  # the multiway (text / image) branches too
    torch.testing.assert_close(owl_int8(pictures), owl_full(pictures), atol=2e-2, rtol=0)
