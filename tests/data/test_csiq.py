import pytest

from iqa_lightning.data import AnnotationError, CSIQDataModule

from .fixtures_more import CSIQ_REFS, write_csiq


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = CSIQDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = CSIQDataModule(root="/nonexistent")
    assert dm.mos_range == (0.0, 1.0) and dm.higher_better is False
    assert dm.split == "reference_disjoint" and dm.name == "csiq"


def test_xlsx_rows_names_and_disjoint_split(tmp_path):
    root = write_csiq(tmp_path / "CSIQ", n_refs=10, n_levels=2)
    dm = make(root)
    assert sum(dm.num_records.values()) == 60
    assert dm.num_records == {"train": 42, "val": 6, "test": 12}
    refs = {s: {r.ref_id for r in dm.records(s)} for s in ("train", "val", "test")}
    assert [len(refs[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert not (
        refs["train"] & refs["val"] or refs["train"] & refs["test"] or refs["val"] & refs["test"]
    )
    by_id = {r.image_id: r for r in dm.records()}
    assert by_id["1600.AWGN.1.png"].path == root / "dst_imgs" / "awgn" / "1600.AWGN.1.png"
    assert by_id["1600.AWGN.1.png"].ref_id == "1600.png"  # a numeric cell in the workbook
    assert by_id["aerial_city.jpeg2000.2.png"].path.parent.name == "jpeg2000"
    assert by_id["boston.BLUR.1.png"].mos_raw == pytest.approx(0.22)


def test_dmos_is_flipped(tmp_path):
    dm = make(write_csiq(tmp_path / "c"))
    by_id = {r.image_id: r for r in dm.records()}
    level1, level2 = by_id["1600.AWGN.1.png"], by_id["1600.AWGN.2.png"]
    assert level1.mos_raw < level2.mos_raw
    assert dm.to_target(level1.mos_raw) > dm.to_target(level2.mos_raw)
    assert dm.to_target(level1.mos_raw) == pytest.approx(0.9)
    assert all(0.0 <= dm.to_target(r.mos_raw) <= 1.0 for r in dm.records())


def test_csv_export_and_flat_image_folder(tmp_path):
    root = write_csiq(tmp_path / "c", labels="csv", nested=False)
    dm = make(root)
    assert sum(dm.num_records.values()) == 60
    assert dm.records()[0].path == root / "dst_imgs" / "1600.AWGN.1.png"
    assert make(root, labels_file="csiq.DMOS.csv").records() == dm.records()


def test_unknown_distortion_names_the_row(tmp_path):
    import openpyxl

    root = write_csiq(tmp_path / "c")
    workbook = openpyxl.load_workbook(root / "csiq.DMOS.xlsx")
    workbook["all_by_image"]["F7"] = "sharpen"
    workbook.save(root / "csiq.DMOS.xlsx")
    with pytest.raises(AnnotationError) as info:
        make(root)
    message = str(info.value)
    assert "csiq.DMOS.xlsx, sheet 'all_by_image', row 7, column 'dst_type'" in message
    assert "'sharpen'" in message


def test_non_numeric_dmos_names_sheet_row_column(tmp_path):
    import openpyxl

    root = write_csiq(tmp_path / "c")
    workbook = openpyxl.load_workbook(root / "csiq.DMOS.xlsx")
    workbook["all_by_image"]["I9"] = "n/a"
    workbook.save(root / "csiq.DMOS.xlsx")
    with pytest.raises(AnnotationError, match=r"sheet 'all_by_image', row 9, column 'dmos': 'n/a'"):
        make(root)


def test_pyiqa_layout_matches_published(tmp_path):
    published = make(write_csiq(tmp_path / "a" / "CSIQ"))
    pyiqa = make(write_csiq(tmp_path / "b" / "CSIQ", layout="pyiqa"))
    assert pyiqa.resolved_layout == "pyiqa"
    key = sorted((r.image_id, round(r.mos_raw, 6), r.ref_id) for r in pyiqa.records())
    assert key == sorted((r.image_id, round(r.mos_raw, 6), r.ref_id) for r in published.records())
    assert {r.ref_id for r in pyiqa.records()} == {f"{name}.png" for name in CSIQ_REFS}
