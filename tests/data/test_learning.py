"""The learning set: its files, its split (held-out photographs and strengths in test), its MOS."""

import csv
import json

import pytest

from iqa_lightning.data import LearningDataModule, generate_learning_set
from iqa_lightning.data.datasets.learning import TEST_STRENGTHS, TRAIN_STRENGTHS
from iqa_lightning.tiny.world import HELD_OUT_PHOTOS, quality

SMALL = {"train": 24, "val": 6, "test": 12, "size": 32, "seed": 3}


@pytest.fixture(scope="module")
def learning_set(tmp_path_factory):
    return generate_learning_set(tmp_path_factory.mktemp("learning") / "set", **SMALL)


def rows(root):
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def parse(distortions):
    return [(k, float(t)) for k, t in (p.split(":") for p in distortions.split(";") if p)]


def test_labels_file_and_images(learning_set):
    table = rows(learning_set)
    assert list(table[0]) == ["image", "mos", "std", "split", "photo", "distortions"]
    assert [sum(r["split"] == s for r in table) for s in ("train", "val", "test")] == [24, 6, 12]
    for row in table:
        assert (learning_set / row["image"]).is_file()
        assert 1.0 <= float(row["mos"]) <= 5.0


def test_test_split_holds_the_held_out_photographs_and_strengths_only(learning_set):
    for row in rows(learning_set):
        held_out = row["photo"] in HELD_OUT_PHOTOS
        assert held_out == (row["split"] == "test"), row
        allowed = TEST_STRENGTHS if row["split"] == "test" else TRAIN_STRENGTHS
        assert all(t in allowed for _, t in parse(row["distortions"])), row


def test_mos_follows_the_law_within_the_rater_noise(learning_set):
    table = rows(learning_set)
    errors = [float(r["mos"]) - quality(parse(r["distortions"])) for r in table]
    assert max(abs(e) for e in errors) < 0.5
    assert len({round(float(r["mos"]), 2) for r in table}) > len(table) // 2


def test_instruction_files_cover_training_images_only(learning_set):
    train = {r["image"] for r in rows(learning_set) if r["split"] == "train"}
    conversations = json.loads((learning_set / "q_instruct.json").read_text())
    assert {c["image"] for c in conversations} == train
    last = conversations[0]["conversations"][-1]["value"]
    assert last.split()[-1].rstrip(".") in ("excellent", "good", "fair", "poor", "bad")
    descriptions = json.loads((learning_set / "descriptions.json").read_text())
    assert len(descriptions) == len(rows(learning_set))


def test_data_module_reads_the_official_split(tmp_path):
    module = LearningDataModule(
        root=tmp_path / "set", train_images=8, val_images=4, test_images=4, generated_size=32,
        image_size=32, batch_size=4, num_workers=0, split="official",
    )  # fmt: skip
    assert module.prepare_records() == {"train": 8, "val": 4, "test": 4}
    batch = next(iter(module.train_dataloader()))
    assert batch["pixels"].shape == (4, 3, 32, 32)
    assert 0.0 <= float(batch["target"].min()) and float(batch["target"].max()) <= 1.0


def test_a_folder_with_other_settings_is_refused(tmp_path):
    generate_learning_set(tmp_path / "set", **{**SMALL, "train": 4, "val": 4, "test": 4})
    with pytest.raises(FileExistsError, match="generated with"):
        generate_learning_set(tmp_path / "set", **{**SMALL, "train": 5, "val": 4, "test": 4})


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="train_images"):
        generate_learning_set("unused", train=2)
