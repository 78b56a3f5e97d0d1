import shutil

import pytest

from iqa_lightning.data import AGIQA3KDataModule

from .fixtures import write_agiqa


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = AGIQA3KDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = AGIQA3KDataModule(root="/nonexistent")
    assert dm.split == "random" and dm.mos_range == (0.0, 5.0) and dm.higher_better


def test_rows_split_and_labels(tmp_path):
    root = write_agiqa(tmp_path / "AGIQA-3K", n_images=30)
    dm = make(root, seed=3)
    assert dm.num_records == {"train": 21, "val": 3, "test": 6}
    records = dm.records()
    assert records[0].image_id == "AttnGAN_normal_000.jpg"
    assert records[0].mos_raw == pytest.approx(0.2)  # below 1: the scale starts at 0
    assert dm.to_target(records[0].mos_raw) == pytest.approx(0.04)
    assert dm.to_target(records[-1].mos_raw) == pytest.approx(0.96)
    assert all(r.ref_id is None for r in records)


def test_random_split_is_seeded(tmp_path):
    root = write_agiqa(tmp_path / "a", n_images=30)
    assert make(root, seed=1).split_table() == make(root, seed=1).split_table()
    assert make(root, seed=1).split_table() != make(root, seed=2).split_table()


@pytest.mark.parametrize("folder", ["images", "Images", "AGIQA-3K", "."])
def test_image_dir_auto(tmp_path, folder):
    root = write_agiqa(tmp_path / "a", n_images=20, image_dir=folder)
    dm = make(root)
    assert dm.records()[0].path.is_file()


def test_image_dir_auto_survives_a_missing_first_image(tmp_path):
    root = write_agiqa(tmp_path / "a", n_images=20)
    (root / "images" / "AttnGAN_normal_000.jpg").unlink()
    dm = make(root, on_bad_image="skip")
    assert len(dm.skipped) == 1


def test_image_dir_not_found_lists_places(tmp_path):
    root = write_agiqa(tmp_path / "a", n_images=20, image_dir="pics")
    with pytest.raises(FileNotFoundError) as info:
        make(root)
    message = str(info.value)
    assert "AttnGAN_normal_000.jpg" in message and "dataset.image_dir" in message
    assert make(root, image_dir="pics").records()[0].path.parent.name == "pics"


def test_missing_data_csv(tmp_path):
    root = write_agiqa(tmp_path / "a", n_images=10)
    (root / "data.csv").unlink()
    with pytest.raises(FileNotFoundError, match="data.csv"):
        make(root)


def test_alignment_scores(tmp_path):
    dm = make(write_agiqa(tmp_path / "a", n_images=30), score_column="mos_align")
    assert dm.records()[0].mos_raw == pytest.approx(4.5)


def test_nan_quality_names_line(tmp_path):
    root = write_agiqa(tmp_path / "a", n_images=10)
    lines = (root / "data.csv").read_text().splitlines()
    lines[4] = lines[4].replace(lines[4].split(",")[-4], "nan", 1)
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 5, column 'mos_quality': 'nan'"):
        make(root)


def test_batches_from_a_copied_root(tmp_path):
    root = write_agiqa(tmp_path / "a", n_images=12)
    copy = shutil.copytree(root, tmp_path / "copy of ÄGIQA")
    batch = next(iter(make(copy).test_dataloader()))
    assert batch["pixels"].shape[1:] == (3, 16, 16)
