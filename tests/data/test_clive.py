import numpy as np
import pytest
from scipy.io import savemat

from iqa_lightning.data import AnnotationError, CLIVEDataModule

from .fixtures_more import write_clive


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = CLIVEDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = CLIVEDataModule(root="/nonexistent")
    assert dm.mos_range == (0.0, 100.0) and dm.higher_better is True
    assert dm.split == "random" and dm.exclude_training_images


def test_rows_training_images_left_out_and_seeded_split(tmp_path):
    root = write_clive(tmp_path / "LIVEC", n_images=30)
    dm = make(root, seed=3)
    assert dm.num_records == {"train": 21, "val": 3, "test": 6}
    records = dm.records()
    assert records[0].image_id == "100.bmp" and records[0].path == root / "Images" / "100.bmp"
    assert all(r.ref_id is None and not r.image_id.startswith("t") for r in records)
    assert make(root, seed=3).split_table() == dm.split_table()
    assert make(root, seed=4).split_table() != dm.split_table()


def test_labels_direction_and_range(tmp_path):
    dm = make(write_clive(tmp_path / "c", n_images=30))
    records = dm.records()
    assert records[0].mos_raw == pytest.approx(5.0) and records[-1].mos_raw == pytest.approx(95.0)
    assert dm.to_target(records[-1].mos_raw) == pytest.approx(0.95)
    assert dm.to_target(records[0].mos_raw) < dm.to_target(records[-1].mos_raw)


def test_training_images_kept_on_request(tmp_path):
    dm = make(write_clive(tmp_path / "c", n_images=30), exclude_training_images=False)
    assert sum(dm.num_records.values()) == 37
    t1 = dm.records()[0]
    assert t1.image_id == "t1.bmp" and t1.path.parent.name == "trainingImages" and t1.path.is_file()


def test_name_and_score_counts_must_match(tmp_path):
    root = write_clive(tmp_path / "c", n_images=30)
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.ones((1, 5))})
    with pytest.raises(AnnotationError, match="lists 37 images but .*AllMOS_release.mat has 5"):
        make(root)


def test_pyiqa_layout_and_pickle_counts_rows_after_dropping_training_images(tmp_path):
    root = write_clive(tmp_path / "LIVEC", n_images=30, layout="pyiqa")
    dm = make(root, split="pyiqa", split_file="livechallenge_seed123.pkl", split_index=1)
    assert dm.resolved_layout == "pyiqa"
    assert sum(dm.num_records.values()) == 30
    # the fixture's split 1 holds out every fifth image: 100.bmp, 105.bmp, ... (6 images)
    assert {r.image_id for r in dm.records("test")} == {f"{100 + i}.bmp" for i in range(0, 30, 5)}
