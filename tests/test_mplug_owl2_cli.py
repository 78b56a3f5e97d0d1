"""mPLUG-Owl2 through the command lines: zero-shot scoring, the demo with a pixel prompt, LoRA and
Q-Adapt, and the clear error of an uncached hub checkpoint offline."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import FAST, REPO, run_train

IMAGES = REPO / "tests" / "fixtures" / "mplug_owl2_tiny" / "images"


def test_the_loader_resizes_as_the_model_declares():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        chosen = {
            m: compose("train", overrides=[f"model={m}"]).dataset.resize
            for m in ("tiny_mplug_owl2", "one_align", "deqa_score", "tiny_llava", "tiny_bunny")
        }
        forced = compose("train", overrides=["model=one_align", "dataset.resize=squash"])
        scoring = compose("scoring", overrides=["model=q_align_koniq", "images=x"])
    assert chosen == {
        "tiny_mplug_owl2": "pad_square",
        "one_align": "pad_square",
        "deqa_score": "pad_square",
        "tiny_llava": "squash",
        "tiny_bunny": "pad_square_siglip",
    }
    assert forced.dataset.resize == "squash" and scoring.model.resize == "pad_square"
    assert scoring.model.template == "qalign"


@pytest.mark.slow
def test_zero_shot_scoring_pads_to_square_as_the_model_declares(run_env, tmp_path):
    out = tmp_path / "scores.csv"
    run_train(
        [f"images={IMAGES}", "model=tiny_mplug_owl2", "score=qalign", f"out={out}"],
        run_env,
        entry=("-m", "iqa_lightning.score"),
    )
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["image"] for r in rows) == ["astronaut.png", "chelsea.png", "coffee.png"]
    scores = [float(r["score"]) for r in rows]
    assert all(0 <= s <= 1 for s in scores) and len(set(scores)) == 3

    # The same numbers in process, with pad_square (the model's resize) and not squash.
    from iqa_lightning.data.images import array_to_tensor, load_rgb, resize_to_array
    from iqa_lightning.models.backbones import build_tiny_mplug_owl2
    from iqa_lightning.models.score import WordScore

    backbone = build_tiny_mplug_owl2()
    head = WordScore(
        ["excellent", "good", "fair", "poor", "bad"],
        [1.0, 0.75, 0.5, 0.25, 0.0],
        "How would you rate the quality of this image?",
        "The quality of the image is",
    ).bind(backbone)
    ids = backbone.encode_prompt(head.question, head.answer_prefix)
    for row in rows:
        for resize, same in (("pad_square", True), ("squash", False)):
            array = resize_to_array(load_rgb(IMAGES / row["image"]), 64, "bicubic", resize)
            with torch.no_grad():
                logits = backbone.next_token_logits(array_to_tensor(array)[None], ids)
            assert (abs(float(head(logits)) - float(row["score"])) < 1e-5) is same, resize


@pytest.mark.slow
def test_demo_trains_a_pixel_prompt_on_mplug_owl2(run_env, tmp_path):
    run_train([*FAST, "model=tiny_mplug_owl2", "logger=csv", f"hydra.run.dir={tmp_path}"], run_env)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert -1 <= metrics["test/srcc"] <= 1 and metrics["trainable_parameters"] > 0
    config = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "resize: pad_square" in config


@pytest.mark.slow
def test_demo_trains_a_pixel_prompt_on_bunny(run_env, tmp_path):
    run_train([*FAST, "model=tiny_bunny", "logger=csv", f"hydra.run.dir={tmp_path}"], run_env)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert -1 <= metrics["test/srcc"] <= 1 and metrics["trainable_parameters"] > 0
    config = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "resize: pad_square_siglip" in config


@pytest.mark.slow
def test_lora_and_qadapt_progressive_on_mplug_owl2(run_env, tmp_path):
    args = [
        "experiment=smoke", "model=tiny_mplug_owl2", "prompt=qadapt_tiny", "prompt.num_layers=1",
        "dataset.n_refs=4", "dataset.generated_size=96", "instruct.n_refs=4",
        "instruct.generated_size=96", "instruct.steps_per_epoch=4", "logger=csv",
        "stage.lora.r=4", "stage.lora.alpha=8", "stage=progressive", "stage.phases.stage1.epochs=1",
        "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    run_train(args, run_env)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert -1 <= metrics["test/mcq_acc"] <= 1
    lora = load_file(tmp_path / "checkpoints" / "stage1" / "trainable.safetensors")
    # LoRA on every projection of both layers, each multiway k / v branch included.
    assert len(lora) == 2 * 9 * 2
    assert any("k_proj.multiway.1.lora_A" in k for k in lora)
    assert any("v_proj.multiway.0.lora_B" in k for k in lora)


@pytest.mark.slow
def test_uncached_hub_checkpoint_offline_is_one_clear_error(run_env, tmp_path):
    env = {**run_env, "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "iqa_lightning.score", f"images={IMAGES}", "model=one_align",
         f"out={tmp_path / 's.csv'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model=one_align: q-future/one-align is not in the local cache")
    assert "HF_HUB_OFFLINE=1" in last and "Traceback" not in proc.stderr
