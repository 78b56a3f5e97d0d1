import pytest

from iqa_lightning.data import AnnotationError, PIPALDataModule

from .fixtures_more import write_pipal


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = PIPALDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = PIPALDataModule(root="/nonexistent")
    assert dm.mos_range == (800.0, 2000.0) and dm.higher_better
    assert dm.split == "reference_disjoint" and dm.name == "pipal"


@pytest.mark.parametrize("naming", ["ntire", "readme"])
def test_rows_image_folders_and_disjoint_split(tmp_path, naming):
    root = write_pipal(tmp_path / "PIPAL", n_refs=10, per_ref=4, naming=naming)
    dm = make(root)
    assert dm.num_records == {"train": 28, "val": 4, "test": 8}
    refs = {s: {r.ref_id for r in dm.records(s)} for s in ("train", "val", "test")}
    assert [len(refs[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert not (
        refs["train"] & refs["val"] or refs["train"] & refs["test"] or refs["val"] & refs["test"]
    )
    assert all(r.path.is_file() for r in dm.records())
    assert {r.path.parent.name for r in dm.records()} == {f"Distortion_{i}" for i in range(1, 5)}


def test_labels_direction_and_range(tmp_path):
    dm = make(write_pipal(tmp_path / "p"))
    by_id = {r.image_id: r for r in dm.records()}
    low, high = by_id["A0001_00_01.bmp"], by_id["A0001_03_01.bmp"]
    assert low.mos_raw == pytest.approx(1110.0) and high.mos_raw == pytest.approx(1560.0)
    assert dm.to_target(high.mos_raw) > dm.to_target(low.mos_raw)
    assert dm.to_target(low.mos_raw) == pytest.approx(310 / 1200)


def test_bad_label_line(tmp_path):
    root = write_pipal(tmp_path / "p")
    (root / "Train_Label" / "A0002.txt").write_text("A0002_00_02.bmp,1500\nA0002_01_02.bmp;1400\n")
    with pytest.raises(AnnotationError, match=r"A0002.txt, line 2: expected '<image>,<score>'"):
        make(root)


def test_no_image_folder_lists_the_places(tmp_path):
    root = write_pipal(tmp_path / "p", n_refs=3)
    for i in range(1, 5):
        (root / f"Distortion_{i}").rename(root / f"parts_{i}")
    with pytest.raises(FileNotFoundError) as info:
        make(root)
    assert "Distortion_1" in str(info.value) and "Dist_Imgs" in str(info.value)


def test_official_split_from_pyiqa(tmp_path):
    root = write_pipal(tmp_path / "PIPAL", layout="pyiqa")
    dm = make(root, split="official")
    assert dm.resolved_layout == "pyiqa"
    assert dm.num_records == {"train": 28, "val": 4, "test": 8}
    assert {r.ref_id for r in dm.records("val")} == {"A0008"}
    with pytest.raises(ValueError, match="no official split"):
        make(write_pipal(tmp_path / "published"), split="official")
