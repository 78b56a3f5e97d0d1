from collections import Counter

import pytest

from iqa_lightning.data import KonIQDataModule

from .fixtures import koniq_set_of, write_image, write_koniq

SPLIT = {"training": "train", "validation": "val", "test": "test"}


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = KonIQDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = KonIQDataModule(root="/nonexistent")
    assert dm.split == "official" and dm.mos_range == (1.0, 100.0) and dm.higher_better


def test_official_split_from_sets_file(tmp_path):
    root = write_koniq(tmp_path / "koniq10k", n_images=30)
    dm = make(root)
    assert dm.num_records == {"train": 21, "val": 3, "test": 6}
    names = [r.image_id for r in dm.records()]
    expected = {name: SPLIT[koniq_set_of(i)] for i, name in enumerate(names)}
    assert dict(dm.split_table()) == expected
    assert all(r.path.parent == root / "1024x768" for r in dm.records())


def test_scores_on_the_1_100_scale(tmp_path):
    root = write_koniq(tmp_path / "k", n_images=30)
    dm = make(root)
    records = dm.records()
    assert records[0].mos_raw == pytest.approx(10.0) and records[-1].mos_raw == pytest.approx(90.0)
    assert dm.to_target(records[-1].mos_raw) > dm.to_target(records[0].mos_raw)
    assert dm.to_target(records[-1].mos_raw) == pytest.approx(89 / 99)


def test_wrong_mos_range_for_sets_file_is_reported(tmp_path):
    root = write_koniq(tmp_path / "k")
    with pytest.raises(ValueError, match=r"dataset\.mos_range \[1, 5\]"):
        make(root, mos_range=(1, 5))


def test_image_dir_auto_prefers_512x384(tmp_path):
    root = write_koniq(tmp_path / "k", n_images=20)
    write_koniq(tmp_path / "k", n_images=20, image_dir="512x384")
    assert make(root).records()[0].path.parent.name == "512x384"
    assert make(root, image_dir="1024x768").records()[0].path.parent.name == "1024x768"


def test_missing_image_dir_lists_both(tmp_path):
    root = write_koniq(tmp_path / "k", n_images=10, image_dir="full")
    with pytest.raises(FileNotFoundError) as info:
        make(root)
    assert "1024x768" in str(info.value) and "512x384" in str(info.value)
    with pytest.raises(FileNotFoundError, match="dataset.image_dir"):
        make(root, image_dir="half")


def test_missing_label_files_lists_both(tmp_path):
    root = tmp_path / "k"
    write_image(root / "1024x768" / "1.jpg")
    with pytest.raises(FileNotFoundError) as info:
        make(root)
    message = str(info.value)
    assert "koniq10k_distributions_sets.csv" in message
    assert "koniq10k_scores_and_distributions.csv" in message


def test_scores_file_without_sets_official_is_an_error(tmp_path):
    root = write_koniq(tmp_path / "k", with_sets=False)
    with pytest.raises(ValueError, match=r"dataset\.split=random"):
        make(root)


def test_scores_file_with_random_split_uses_mos_zscore(tmp_path):
    root = write_koniq(tmp_path / "k", n_images=40, with_sets=False)
    dm = make(root, split="random", seed=1)
    assert Counter(split for _, split in dm.split_table()) == {"train": 28, "val": 4, "test": 8}
    assert dm.records()[0].mos_raw == pytest.approx(10.0)
    assert dm.records()[0].official_split is None


def test_scores_file_raw_1_5_mos(tmp_path):
    root = write_koniq(tmp_path / "k", n_images=40, with_sets=False)
    dm = make(root, split="random", score_column="MOS", mos_range=(1, 5))
    assert 1.0 <= min(r.mos_raw for r in dm.records()) < max(r.mos_raw for r in dm.records()) <= 5.0


def test_explicit_labels_file(tmp_path):
    root = write_koniq(tmp_path / "k", n_images=20, with_sets=True, with_scores=True)
    dm = make(root, labels_file="koniq10k_scores_and_distributions.csv", split="random")
    assert dm.records()[0].official_split is None
    with pytest.raises(FileNotFoundError, match="dataset.labels_file"):
        make(root, labels_file="labels.csv")


def test_sets_file_missing_set_column(tmp_path):
    root = write_koniq(tmp_path / "k", n_images=10)
    path = root / "koniq10k_distributions_sets.csv"
    path.write_text(path.read_text().replace(",MOS,", ",mos,", 1))
    with pytest.raises(ValueError) as info:
        make(root)
    assert "koniq10k_distributions_sets.csv" in str(info.value) and "'MOS'" in str(info.value)


def test_batches(tmp_path):
    dm = make(write_koniq(tmp_path / "k"), image_size=24)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixels"].shape == (4, 3, 24, 24)
    assert batch["image_id"][0].endswith(".jpg")
