import pytest

from iqa_lightning.data import AnnotationError, TID2013DataModule

from .fixtures_more import write_tid2013


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = TID2013DataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = TID2013DataModule(root="/nonexistent")
    assert dm.mos_range == (0.0, 9.0) and dm.higher_better is True
    assert dm.split == "reference_disjoint" and dm.name == "tid2013"


def test_rows_case_folding_and_disjoint_split(tmp_path):
    root = write_tid2013(tmp_path / "tid2013", n_refs=10, n_types=2, n_levels=2)
    dm = make(root)
    assert dm.num_records == {"train": 28, "val": 4, "test": 8}
    refs = {s: {r.ref_id for r in dm.records(s)} for s in ("train", "val", "test")}
    assert [len(refs[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert not (
        refs["train"] & refs["val"] or refs["train"] & refs["test"] or refs["val"] & refs["test"]
    )
    first = dm.records()[0]  # listed as I01_01_1.bmp, stored as i01_01_1.bmp
    assert first.image_id == "i01_01_1.bmp" and first.path.is_file() and first.ref_id == "I01"


def test_labels_direction_and_range(tmp_path):
    dm = make(write_tid2013(tmp_path / "t"))
    by_id = {r.image_id: r for r in dm.records()}
    assert by_id["i01_01_1.bmp"].mos_raw == pytest.approx(6.25)
    assert dm.to_target(by_id["i01_01_1.bmp"].mos_raw) > dm.to_target(by_id["i01_01_2.bmp"].mos_raw)
    assert dm.to_target(9.0) == 1.0 and dm.to_target(4.5) == 0.5


def test_bad_line_names_file_and_line(tmp_path):
    root = write_tid2013(tmp_path / "t")
    lines = (root / "mos_with_names.txt").read_text().splitlines()
    lines[3] = "five i01_02_2.bmp"
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"mos_with_names.txt, line 4, column 'mos': 'five'"):
        make(root)
    lines[3] = "4.1"
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"line 4: expected 2 fields"):
        make(root)


def test_pyiqa_layout_matches_published(tmp_path):
    published = make(write_tid2013(tmp_path / "a" / "tid2013"))
    pyiqa = make(write_tid2013(tmp_path / "b" / "tid2013", layout="pyiqa"))
    assert pyiqa.resolved_layout == "pyiqa"
    assert [(r.image_id, r.mos_raw, r.ref_id) for r in pyiqa.records()] == [
        (r.image_id, r.mos_raw, r.ref_id) for r in published.records()
    ]
    assert pyiqa.split_table() == published.split_table()
