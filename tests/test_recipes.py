"""The visual-prompt reference recipe (mplug2-vp-for-nriqa), knob for knob, and its 33-run grid."""

import itertools

import pytest
import torch
import yaml

from iqa_lightning.models.backbones import build_tiny_llava
from iqa_lightning.models.backbones.base import IMAGENET_MEAN
from iqa_lightning.models.prompts import PaddingPrompt
from iqa_lightning.models.score import WordScore
from iqa_lightning.phases import phase_entries
from iqa_lightning.train import CONFIG_DIR

from .test_configs import compose_train

REFERENCE = {  # dataset: (batch size, epochs, score range divisor), configs/SGD_mplug2_exp_*.yaml
    "kadid": (32, 25, 5),
    "koniq": (4, 25, 100),
    "agiqa3k": (4, 35, 5),
}


@pytest.mark.parametrize(
    "option,dataset", [("kadid", "kadid"), ("koniq", "koniq"), ("agiqa", "agiqa3k")]
)
def test_reference_preset_is_the_reference_recipe(option, dataset, tmp_path):
    _, cfg = compose_train([f"experiment=vp_{option}_padding30"], tmp_path)
    (optimizer,) = [phase["optimizer"] for phase in phase_entries(cfg["stage"]["phases"])]
    assert optimizer["_target_"] == "torch.optim.SGD"
    assert (optimizer["lr"], optimizer["momentum"], optimizer["weight_decay"]) == (60.0, 0.0, 0.0)
    assert phase_entries(cfg["stage"]["phases"])[0]["scheduler"] is None  # constant rate, no warmup
    assert cfg["trainer"]["gradient_clip_val"] == 1.0  # HF max_grad_norm
    assert cfg["trainer"]["gradient_clip_algorithm"] == "norm"
    prompt = cfg["prompt"]
    assert (prompt["size"], prompt["mode"], prompt["delta"], prompt["init_scale"]) == (
        30, "add", 1.0, 0.01,
    )  # fmt: skip
    assert cfg["score"]["answer_prefix"] == ""  # the token right after ASSISTANT:
    assert cfg["score"]["words"] == ["good", "fine", "poor", "bad"]
    assert cfg["score"]["question"] == "Rate the technical quality of the image."
    model = cfg["model"]  # mPLUG-Owl2-7B (src/vlms.py:15), 448 px, the image before the question
    assert model["_target_"].endswith("MplugOwl2Backbone.from_pretrained")
    assert (model["pretrained"], model["image_size"], model["template"]) == (
        "MAGAer13/mplug-owl2-llama2-7b", 448, "owl2",
    )  # fmt: skip
    assert cfg["dataset"]["resize"] == "short_side_crop"  # the recipe's, not the model's pad_square
    batch, epochs, divisor = REFERENCE[dataset]
    data = cfg["dataset"]
    assert (data["name"], data["batch_size"], data["eval_batch_size"]) == (dataset, batch, 32)
    assert data["mos_range"] == [0, divisor] and data["higher_better"]
    assert (data["resize"], data["hflip"]) == ("short_side_crop", True)
    assert cfg["trainer"]["max_epochs"] == epochs and cfg["seed"] == 42
    assert cfg["callbacks"]["early_stopping"]["patience"] == 6
    assert cfg["callbacks"]["early_stopping"]["monitor"] == "val/srcc_plcc"


def test_other_prompt_types_keep_their_own_optimiser(tmp_path):
    _, pixel = compose_train(["experiment=smoke", "prompt=overlay"], tmp_path)
    assert phase_entries(pixel["stage"]["phases"])[0]["optimizer"]["_target_"] == "torch.optim.SGD"
    _, qadapt = compose_train(["experiment=smoke", "prompt=qadapt"], tmp_path)
    assert phase_entries(qadapt["stage"]["phases"])[0]["optimizer"]["_target_"] == "torch.optim.AdamW"
    _, chosen = compose_train(
        ["experiment=smoke", "prompt=qadapt", "prompt_optimizer=sgd", "prompt_optimizer.lr=3"],
        tmp_path,
    )
    assert phase_entries(chosen["stage"]["phases"])[0]["optimizer"]["_target_"] == "torch.optim.SGD"
    assert phase_entries(chosen["stage"]["phases"])[0]["optimizer"]["lr"] == 3


def _grid():
    with open(f"{CONFIG_DIR}/hparams_search/vp_reference.yaml") as f:
        params = yaml.safe_load(f)["hydra"]["sweeper"]["params"]
    axes = [[(key, v) for v in str(values).split(",")] for key, values in params.items()]
    return [dict(job) for job in itertools.product(*axes)]


# slow: composes all 33 jobs; the recipe tests above compose each preset
@pytest.mark.slow
def test_reference_grid_is_the_33_reference_experiments(tmp_path):
    jobs = _grid()
    assert len(jobs) == 33
    seen = set()
    for job in jobs:
        overrides = ["experiment=smoke", *(f"{k}={v}" for k, v in job.items())]
        _, cfg = compose_train(overrides, tmp_path)
        dataset, prompt = cfg["dataset"], cfg["prompt"]
        kind = prompt["_target_"].rsplit(".", 1)[1]
        where = prompt.get("position")
        key = (dataset["name"], kind, where, prompt["size"], prompt["mode"])
        assert key not in seen, job
        seen.add(key)
        batch, epochs, _ = REFERENCE[dataset["name"]]
        assert (dataset["batch_size"], cfg["trainer"]["max_epochs"]) == (batch, epochs), job
        assert cfg["model"]["_target_"].endswith("build_tiny_llava")  # the demo's model stays
        assert phase_entries(cfg["stage"]["phases"])[0]["optimizer"]["momentum"] == 0.0
    sizes = {(k[1], k[2], k[3], k[4]) for k in seen}
    assert sizes == {
        *[(kind, pos, size, "add") for kind, pos in
          [("PaddingPrompt", None), ("PatchPrompt", "center"), ("PatchPrompt", "topleft")]
          for size in (10, 30)],
        ("OverlayPrompt", None, None, "add"),
        *[(kind, pos, 30, "mul") for kind, pos in
          [("PaddingPrompt", None), ("PatchPrompt", "center"), ("PatchPrompt", "topleft")]],
        ("OverlayPrompt", None, None, "mul"),
    }  # fmt: skip


def test_grouped_score_reads_the_word_right_after_the_assistant_marker():
    # The reference takes tokenizer.encode(" good")[1] (a LLaMA tokenizer splits " good" into
    # "▁" + "▁good") and reads it at the last prompt position, right after "ASSISTANT:".
    backbone = build_tiny_llava()
    score = WordScore(["good", "fine", "poor", "bad"], [1, 1, 0, 0], answer_prefix="").bind(
        backbone
    )
    tok = backbone.tokenizer
    expected = [tok(f" {w}", add_special_tokens=False).input_ids[1] for w in score.words]
    assert score.token_ids.tolist() == expected
    assert tok.convert_ids_to_tokens(expected) == ["▁good", "▁fine", "▁poor", "▁bad"]
    prompt = backbone.build_prompt("Rate the technical quality of the image.")
    assert prompt.endswith("Rate the technical quality of the image. ASSISTANT:")


def test_reference_mul_blacks_out_what_the_prompt_does_not_cover():
    pixels = torch.full((1, 3, 32, 32), 0.5)
    ours = PaddingPrompt(32, size=4, mode="mul", init_scale=0.01)
    reference = PaddingPrompt(32, size=4, mode="mul_reference", init_scale=0.01)
    reference.load_state_dict(ours.state_dict())
    assert torch.equal(ours(pixels)[..., 4:-4, 4:-4], pixels[..., 4:-4, 4:-4])
    assert torch.equal(reference(pixels)[..., 4:-4, 4:-4], torch.zeros(1, 3, 24, 24))
    expected = (pixels * torch.tanh(reference.canvas())).clamp(0, 1)
    assert torch.equal(reference(pixels), expected)


def test_imagenet_normalisation_is_a_knob():
    clip, imagenet = build_tiny_llava(), build_tiny_llava(normalization="imagenet")
    assert imagenet.image_mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    pixels = torch.rand(1, 3, clip.image_size, clip.image_size)
    assert not torch.allclose(clip.normalize(pixels), imagenet.normalize(pixels))
    with pytest.raises(ValueError, match="model.normalization='imagenette'"):
        build_tiny_llava(normalization="imagenette")


def _reference_data(root):
    """KADID-10k, KonIQ-10k and AGIQA-3K fixtures where the reference recipes look for them."""
    from .data.fixtures import write_agiqa, write_kadid, write_koniq

    write_kadid(root / "kadid10k", size=(40, 30))
    write_koniq(root / "koniq10k", size=(40, 30))
    write_agiqa(root / "AGIQA-3K", size=(30, 40))
    return root


def test_reference_resize_reaches_the_pixels(tmp_path):
    import numpy as np
    from PIL import Image

    from iqa_lightning.data import KADIDDataModule

    root = _reference_data(tmp_path)
    data = KADIDDataModule(
        root / "kadid10k", image_size=24, resize="short_side_crop", hflip=False, batch_size=64
    )
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    image = Image.open(root / "kadid10k" / "images" / batch["image_id"][0])
    expected = np.asarray(image.resize((32, 24), Image.BICUBIC).crop((4, 0, 28, 24)))
    got = (batch["pixels"][0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(got, expected)


def _run_grid(tmp_path, run_env, *selection):
    from .conftest import run_train

    data = _reference_data(tmp_path / "data")
    sweep = tmp_path / "sweep"
    args = [
        "-m", "hparams_search=vp_reference", "experiment=smoke", "debug=fast",
        f"paths.data_dir={data}", f"hydra.sweep.dir={sweep}", *selection,
    ]  # fmt: skip
    run_train(args, run_env)
    return sweep


# Slow: the grid's composition is tested above, its data path by the resize test.
@pytest.mark.slow
def test_one_reference_grid_job_trains_offline(tmp_path, run_env):
    sweep = _run_grid(tmp_path, run_env, "vp_recipe=koniq", "vp_prompt=patch_topleft30_mul")
    (job,) = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    assert cfg["dataset"]["name"] == "koniq" and cfg["prompt"]["position"] == "topleft"
    assert (cfg["prompt"]["size"], cfg["prompt"]["mode"]) == (30, "mul")


@pytest.mark.slow
def test_the_whole_reference_grid_trains_offline(tmp_path, run_env):
    sweep = _run_grid(tmp_path, run_env)
    jobs = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    assert len(jobs) == 33
