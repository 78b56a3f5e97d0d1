"""``dataset.native_size`` / the scoring CLI's ``native_size``: batches carry each image at its own
size (``images``, a list) beside the ``pixels`` square, with the decoded file's exact pixels, in
the main process and in DataLoader workers, through the data modules (a mix too) and the scoring
CLI; the tiny Qwen2.5-VL then gets the patch grids Qwen2-VL's image processor gives; the presets
that set it; a pixel prompt with it is refused."""

import csv

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from iqa_lightning.config_checks import check_numbers
from iqa_lightning.data import KoNViDDataModule, TableDataModule
from iqa_lightning.data.dataset import IQAImageDataset, LabelledImage, make_loader
from iqa_lightning.data.images import load_rgb, resize_to_array
from iqa_lightning.data.mix import MixDataModule
from iqa_lightning.errors import ConfigError
from iqa_lightning.models.backbones import build_tiny_qwen2_5_vl
from iqa_lightning.models.generation import GenerativeScorer
from iqa_lightning.models.native_resolution import NativeResolution
from iqa_lightning.scorer import compose_scoring
from iqa_lightning.train import CONFIG_DIR
from tests.test_generative import preset, scripted

#: (name, height, width, PIL mode): a PNG, a JPEG and a grayscale PNG (made RGB by load_rgb).
FILES = [("a.png", 40, 30, "RGB"), ("b.jpg", 57, 91, "RGB"), ("c.png", 64, 64, "L")]
LOW, HIGH = 3136, 28 * 28 * 40  # the native bounds of the tests (small: fast)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Real image files of several sizes."""
    out = tmp_path_factory.mktemp("native")
    rng = np.random.default_rng(0)
    for name, h, w, mode in FILES:
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(out / name)
    return out


def decoded(path) -> np.ndarray:
    """The file's pixels as PIL decodes them, ``[H, W, 3]`` uint8."""
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))


def as_uint8(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def items(folder) -> list[LabelledImage]:
    return [LabelledImage(name, str(folder / name), 3.0, 0.5) for name, *_ in FILES]


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_carry_each_image_at_its_own_size_with_the_files_pixels(folder, workers):
    dataset = IQAImageDataset(items(folder), 24, native_size=True)
    batches = list(make_loader(dataset, 2, workers, shuffle=False))
    images = [image for batch in batches for image in batch["images"]]
    assert all(isinstance(batch["images"], list) for batch in batches)
    assert [tuple(image.shape) for image in images] == [(3, h, w) for _, h, w, _ in FILES]
    for (name, *_), image in zip(FILES, images, strict=True):
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        assert np.array_equal(as_uint8(image), decoded(folder / name))
    # The square is still there, as without the option.
    square = torch.cat([batch["pixels"] for batch in batches])
    plain = IQAImageDataset(items(folder), 24)
    assert square.shape == (3, 3, 24, 24)
    assert torch.equal(square, torch.stack([plain[i]["pixels"] for i in range(3)]))
    assert "images" not in plain[0]


def test_the_flip_turns_the_image_and_its_square_together(folder):
    dataset = IQAImageDataset(items(folder)[1:2], 24, hflip=True, native_size=True)
    original = decoded(folder / "b.jpg")
    square = resize_to_array(load_rgb(folder / "b.jpg"), 24)
    torch.manual_seed(0)
    flips = []
    for _ in range(8):
        sample = dataset[0]
        flipped = np.array_equal(as_uint8(sample["images"]), original[:, ::-1])
        assert flipped or np.array_equal(as_uint8(sample["images"]), original)
        assert np.array_equal(as_uint8(sample["pixels"]), square[:, ::-1] if flipped else square)
        flips.append(flipped)
    assert any(flips) and not all(flips)


def write_table(folder, name, scores):
    table = folder / f"{name}.csv"
    rows = [f"{n},{s}" for (n, *_), s in zip(FILES, scores, strict=True)]
    table.write_text("img_path,mos\n" + "\n".join(rows) + "\n")
    return table


def test_the_data_modules_and_a_mix_pass_the_option_to_their_batches(folder):
    settings = {"image_size": 24, "eval_batch_size": 3, "native_size": True}
    table = TableDataModule(file=str(write_table(folder, "one", [1, 2, 3])), **settings)
    table.setup("fit")
    batch = next(iter(table.eval_dataloader("all")))
    assert sorted(tuple(im.shape[1:]) for im in batch["images"]) == [(40, 30), (57, 91), (64, 64)]
    members = {n: TableDataModule(file=str(write_table(folder, n, [1, 2, 4]))) for n in "xy"}
    mix = MixDataModule(members, **settings)
    mix.setup("fit")
    batch = next(iter(mix.eval_dataloader("all")))
    assert len(batch["images"]) == 3 and batch["pixels"].shape == (3, 3, 24, 24)
    assert len(batch["dataset"]) == 3
    with pytest.raises(ValueError, match="dataset.native_size must be true or false"):
        TableDataModule(file=str(folder / "one.csv"), native_size="yes")
    with pytest.raises(ValueError, match="dataset.native_size=True does not apply"):
        KoNViDDataModule(root=str(folder), native_size=True)  # videos: frames at the square


@pytest.fixture(scope="module")
def qwen():
    return build_tiny_qwen2_5_vl()


def processor_grids(images: list[np.ndarray]) -> torch.Tensor:
    """``image_grid_thw`` of Qwen2-VL's own image processor with the same bounds."""
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": LOW, "longest_edge": HIGH})
    return processor(images=images, return_tensors="pt")["image_grid_thw"]


def test_a_native_batch_reaches_the_model_with_the_processors_grids(folder, qwen):
    settings = preset("q_insight")
    settings["sampling"].update(max_new_tokens=40)
    settings["prompt"].update(system="Think.", question="Rate it.")  # short: fast
    scorer = GenerativeScorer(qwen, None, settings["prompt"], settings["sampling"],
                              settings["parser"], native=NativeResolution(LOW, HIGH))  # fmt: skip
    dataset = IQAImageDataset(items(folder), qwen.image_size, native_size=True)
    batch = next(iter(make_loader(dataset, 3, 0, shuffle=False)))
    seen = scripted(qwen, ['<answer>{"rating": 4}</answer>', "x", '<answer>{"rating": 2}</answer>'])
    try:
        out = scorer.score(batch)
    finally:
        del qwen.model.generate
    assert out.scores.tolist() == [4.0, 3.0, 2.0]
    expected = processor_grids([decoded(folder / name) for name, *_ in FILES])
    assert torch.equal(seen["grid"], expected)
    assert len({tuple(g) for g in expected.tolist()}) == 3, "three sizes, three grids"
    tokens = (seen["ids"] == qwen.image_token_id).sum(1).tolist()
    assert tokens == [t * h * w // 4 for t, h, w in expected.tolist()]


def scoring(tmp_path, *overrides):
    return compose_scoring(["model=tiny_qwen2_5_vl", "trainer=cpu", "num_workers=0",
                            f"trainer.default_root_dir={tmp_path}", *overrides])  # fmt: skip


def test_the_scoring_cli_gives_the_scorer_each_image_at_its_own_size(folder, tmp_path, monkeypatch):
    from iqa_lightning.score import score

    grids = []
    pixel_inputs = NativeResolution.pixel_inputs

    def recorded(self, backbone, images, n=1):
        out = pixel_inputs(self, backbone, images, n)
        grids.extend(out[0])
        return out

    monkeypatch.setattr(NativeResolution, "pixel_inputs", recorded)
    out = tmp_path / "scores.csv"
    # method=q_insight sets native_size (its checkpoint swapped for the tiny one, with bounds).
    cfg = scoring(tmp_path, "method=q_insight", f"+model.min_pixels={LOW}",
                  f"+model.max_pixels={HIGH}", "method.generation.sampling.max_new_tokens=2",
                  "batch_size=2", f"images={folder}", f"out={out}")  # fmt: skip
    assert cfg.native_size is True
    score(cfg)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["image"] for row in rows] == [name for name, *_ in FILES]
    assert "images" not in rows[0] and "pixels" not in rows[0]
    expected = processor_grids([decoded(folder / name) for name, *_ in FILES])
    assert torch.tensor(grids).tolist() == expected.tolist()


def test_the_presets_set_it_and_a_pixel_prompt_with_it_is_one_line(tmp_path):
    from iqa_lightning.score import build_scorer

    assert scoring(tmp_path, "images=x").native_size == "auto"
    assert scoring(tmp_path, "images=x", "method=visualquality_r1").native_size is True
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        train = {o: compose("train", overrides=o.split()) for o in
                 ["model=tiny_llava", "experiment=grpo_q_insight",
                  "experiment=grpo_visualquality_r1", "method=q_insight model=tiny_qwen2_5_vl",
                  "model=tiny_llava prompt=padding dataset.native_size=true"]}  # fmt: skip
    native = {o: cfg.dataset.native_size for o, cfg in train.items()}
    assert native == {o: o != "model=tiny_llava" for o in train}
    with pytest.raises(ConfigError) as info:
        check_numbers(train["model=tiny_llava prompt=padding dataset.native_size=true"])
    line = str(info.value)
    assert "dataset.native_size=true" in line and "PaddingPrompt" in line and "\n" not in line
    assert "prompt=none" in line
    with pytest.raises(ConfigError, match="native_size=true .*PatchPrompt.*prompt=none"):
        build_scorer(scoring(tmp_path, "images=x", "method=q_insight", "prompt=patch_center"))
    with pytest.raises(ConfigError, match="native_size='yes' must be true, false or auto"):
        build_scorer(scoring(tmp_path, "images=x", "native_size=yes"))
