"""``python -m iqa_lightning.export``: a run as a checkpoint folder that loads as
``model.pretrained`` and scores as the run (docs/export.md).

The mPLUG-Owl2 run (``tests/fixtures/export_mplug_owl2/``: LoRA and the visual abstractor tuned on
the golden tiny mPLUG-Owl2) was exported and scored by Q-Align's own code (its README); the LLaVA
runs are the committed run fixtures (``tests/fixtures/runs/``) with the scores they gave.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from iqa_lightning.errors import ConfigError
from iqa_lightning.exporting import export_run, exported_parts
from iqa_lightning.models.backbones.scoring_file import SCORING_FILE, TENSORS_FILE, read_scoring
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.scorer import ImageInputs, compose_scoring, zero_shot_module
from tests.conftest import FAST, REPO, run_main, run_train

FIXTURE = REPO / "tests" / "fixtures" / "export_mplug_owl2"
GOLDEN = REPO / "tests" / "fixtures" / "mplug_owl2_tiny"
RUNS = REPO / "tests" / "fixtures" / "runs"
OWL2_IMAGES = [GOLDEN / "images" / n for n in ("astronaut.png", "coffee.png", "chelsea.png")]


def _module(model: str, folder: Path, image_size: int, *overrides: str):
    cfg = compose_scoring([f"model={model}", f"model.pretrained={folder}", "model.dtype=float32",
                           f"model.image_size={image_size}", *overrides])  # fmt: skip
    return zero_shot_module(cfg)


def _scores(module, images, image_size: int, resize: str) -> torch.Tensor:
    """The module's scores of image files, decoded and resized as the scoring CLI does."""
    data = ImageInputs(images, image_size, resize=resize)
    pixels = torch.stack([data[i]["pixels"] for i in range(len(data))])
    with torch.no_grad():
        return module.score_batch({"pixels": pixels}).float()


def _fixture_run(tmp: Path) -> Path:
    """The mPLUG-Owl2 run, its base model named by an absolute path."""
    run = tmp / "run"
    shutil.copytree(FIXTURE / "run", run)
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    config.model.pretrained = str(GOLDEN)
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    return run


@pytest.fixture(scope="module")
def owl2_export(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export_owl2")
    out = tmp / "exported"
    export_run(_fixture_run(tmp), out)
    return out


def test_mplug_owl2_export_is_the_original_layout_with_lora_merged(owl2_export):
    config = json.loads((owl2_export / "config.json").read_text())
    assert config["model_type"] == "mplug_owl2"
    assert config["architectures"] == ["MPLUGOwl2LlamaForCausalLM"]
    weights = load_file(owl2_export / "model.safetensors")
    base = torch.load(GOLDEN / "pytorch_model.bin", weights_only=True)
    assert weights.keys() == base.keys()  # the original names, no adapter left
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (owl2_export / name).read_bytes() == (GOLDEN / name).read_bytes()
    # LoRA merged: W + B A alpha / r; the tuned abstractor (projector) as it was tuned
    tuned = load_file(FIXTURE / "run" / "checkpoints" / "tuned.safetensors")
    lora = json.loads((FIXTURE / "run" / "checkpoints" / "lora.json").read_text())
    key = "model.layers.1.self_attn.k_proj.multiway.1"
    a = tuned[f"backbone.model.{key}.lora_A.default.weight"]
    b = tuned[f"backbone.model.{key}.lora_B.default.weight"]
    want = base[f"{key}.weight"] + (b @ a) * lora["alpha"] / lora["r"]
    assert (b @ a).abs().max() > 1e-3
    torch.testing.assert_close(weights[f"{key}.weight"], want, atol=1e-6, rtol=0)
    query = "model.visual_abstractor.query_embeds"
    assert torch.equal(weights[query], tuned[f"backbone.model.{query}"])
    assert not torch.equal(weights[query], base[query])
    scoring = json.loads((owl2_export / SCORING_FILE).read_text())
    assert scoring["options"] == {"template": "qalign"} and scoring["prompt"] is None
    assert scoring["score"]["words"] == ["excellent", "good", "fair", "poor", "bad"]


def test_mplug_owl2_export_scores_as_the_run_and_as_qalign_code_scored_it(owl2_export):
    """Reloaded through ``model.pretrained`` with another family preset (its own template and
    head are overridden by scoring.json): the run's scores, and the scores Q-Align's code gave
    the exported folder (recorded), fp32 to 1e-5 and its fp16 scorer.py to 1e-3."""
    module = _module("mplug_owl2_7b", owl2_export, 64)
    got = _scores(module, OWL2_IMAGES, 64, "pad_square")
    run = json.loads((FIXTURE / "run_scores.json").read_text())
    qalign = json.loads((FIXTURE / "qalign_scores.json").read_text())
    assert run["images"] == qalign["images"] == [p.name for p in OWL2_IMAGES]
    torch.testing.assert_close(got, torch.tensor(run["scores"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(got, torch.tensor(qalign["fp32"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(got, torch.tensor(qalign["qalign_scorer"]), atol=1e-3, rtol=0)


def test_llava_export_carries_the_pixel_prompt_and_pushes_the_folder(tmp_path, monkeypatch):
    """The stage-1 fixture (LoRA and a padding prompt on the tiny LLaVA): LoRA merged, the
    prompt in scoring.json; reloaded with the LLaVA preset it scores as the run did; the upload
    gets the folder; a prompt= on top of it, or another input side, is refused."""
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo, **kw: calls.append(
        ("create", repo, kw)))  # fmt: skip
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(
        ("upload", kw)) or "https://hub/commit/1")  # fmt: skip
    out = tmp_path / "exported"
    exported = export_run(RUNS / "stage1", out, push="someone/tiny-llava-iqa")
    assert calls[0][:2] == ("create", "someone/tiny-llava-iqa")
    assert calls[1][1]["folder_path"] == str(out) and calls[1][1]["repo_id"] == calls[0][1]
    assert exported.pushed == "https://hub/commit/1" and exported.merged_lora == 14
    assert not [k for k in load_file(out / "model.safetensors") if "lora" in k]
    scoring = json.loads((out / SCORING_FILE).read_text())
    assert scoring["prompt"]["_target_"].endswith("PaddingPrompt")
    tuned = load_file(RUNS / "stage1" / "checkpoints" / "tuned.safetensors")
    prompt = load_file(out / TENSORS_FILE)
    assert prompt.keys() == {k for k in tuned if k.startswith("prompt.")}
    assert all(torch.equal(prompt[k], tuned[k]) for k in prompt)

    want = json.loads((RUNS / "stage1" / "expected_scores.json").read_text())
    images = [RUNS / "images" / name for name in want["images"]]
    got = _scores(_module("llava_1_5_7b", out, 64), images, 64, "squash")
    torch.testing.assert_close(got, torch.tensor(want["scores"]), atol=1e-5, rtol=0)

    # what the loaders read back refuses a second prompt and another input side
    scoring = read_scoring(str(out))
    parts = {"backbone": SimpleNamespace(scoring=scoring), "prompt": PaddingPrompt(64, size=8),
             "score": None}  # fmt: skip
    with pytest.raises(ConfigError, match=r"brings its tuned prompt \(PaddingPrompt"):
        exported_parts(parts)
    with pytest.raises(ValueError, match=r"tuned at 64 px \(scoring.json\); add model.image"):
        scoring.check_image_size(336)


def test_bad_input_ends_in_one_line(tmp_path, capsys):
    missing = run_main("iqa_lightning.export", [f"run={tmp_path / 'nope'}", f"out={tmp_path}/o"],
                       capsys)  # fmt: skip
    assert missing.code == 1
    assert missing.last_line() == (f"error: run={tmp_path / 'nope'}: does not exist; give a "
                                   "train.py run folder")  # fmt: skip
    rali = run_main("iqa_lightning.export", [f"run={RUNS / 'rali'}", f"out={tmp_path}/o"], capsys)
    assert rali.code == 1
    assert "scorer=rali scorer.pretrained=" in rali.last_line()
    assert "create_metric" in rali.last_line() and not (tmp_path / "o").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    taken = run_main("iqa_lightning.export", [f"run={RUNS / 'stage2'}", f"out={full}"], capsys)
    assert taken.code == 1
    assert taken.last_line() == (f"error: out={full}: the folder exists and is not empty; give "
                                 "a new or empty folder (an export never overwrites)")  # fmt: skip
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    nothing = run_main("iqa_lightning.export", [f"out={tmp_path}/o"], capsys)
    assert nothing.last_line() == ("error: run=<folder> is required: the train.py run folder to "
                                   "export")  # fmt: skip


# ------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_the_recorded_run_scores_are_what_the_run_gives(tmp_path):
    """``run_scores.json`` (the fixture's README) is still what the mPLUG-Owl2 run scores."""
    from iqa_lightning.scorer import Scorer

    got = Scorer.from_run(_fixture_run(tmp_path), accelerator="cpu")(OWL2_IMAGES)
    want = json.loads((FIXTURE / "run_scores.json").read_text())["scores"]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_the_printed_command_scores_the_export_as_the_run(tmp_path, capsys, run_env):
    """The export CLI, then the scoring command it prints, on the stage-1 LLaVA fixture."""
    out = tmp_path / "exported"
    done = run_main("iqa_lightning.export", [f"run={RUNS / 'stage1'}", f"out={out}"], capsys,
                    env=run_env)  # fmt: skip
    assert done.code == 0, done.text
    command = done.out.strip().splitlines()[-1].split()
    assert command[:3] == ["python", "-m", "iqa_lightning.score"]
    args = [a for a in command[3:] if not a.startswith("images=")]
    csv = tmp_path / "scores.csv"
    scored = run_main("iqa_lightning.score", [f"images={RUNS / 'images'}", *args, f"out={csv}"],
                      capsys, env=run_env)  # fmt: skip
    assert scored.code == 0, scored.text
    rows = {Path(image).name: float(score) for image, score in
            (line.split(",") for line in csv.read_text().splitlines()[1:])}  # fmt: skip
    want = json.loads((RUNS / "stage1" / "expected_scores.json").read_text())
    for name, score in zip(want["images"], want["scores"], strict=True):
        assert abs(rows[name] - score) < 1e-5


@pytest.mark.slow
def test_qadapt_prompter_export_reloads_and_scores_as_the_run(tmp_path):
    """The progressive fixture: LoRA merged, the Q-Adapt prompter in scoring.json."""
    out = tmp_path / "exported"
    exported = export_run(RUNS / "progressive", out)
    assert exported.scoring.prompt["_target_"].endswith("QAdaptPrompt")
    assert all(k.startswith("prompter.") for k in load_file(out / TENSORS_FILE))
    want = json.loads((RUNS / "progressive" / "expected_scores.json").read_text())
    images = [RUNS / "images" / name for name in want["images"]]
    got = _scores(_module("llava_1_5_7b", out, 64), images, 64, "squash")
    torch.testing.assert_close(got, torch.tensor(want["scores"]), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_qwen2_vl_lora_run_exports_and_scores_identically(tmp_path, run_env):
    """A tiny Qwen2-VL LoRA run, trained here."""
    from iqa_lightning.scorer import Scorer

    run = tmp_path / "run"
    run_train([*FAST, "model=tiny_qwen2_vl", "prompt=none", "stage=1", "stage.lora.r=8",
               "stage.lora.alpha=16", "trainer.max_epochs=1", "logger=none",
               "callbacks.explanations=null", f"hydra.run.dir={run}"], run_env)  # fmt: skip
    out = tmp_path / "exported"
    exported = export_run(run, out)
    assert exported.family == "qwen2_vl" and exported.merged_lora > 0
    images = sorted((RUNS / "images").glob("*.png"))
    want = Scorer.from_run(run, accelerator="cpu")(images)
    got = _scores(_module("qwen2_5_vl_7b", out, 112), images, 112, "squash")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
