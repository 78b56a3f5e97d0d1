import pytest

from iqa_lightning.data import AnnotationError, SPAQDataModule

from .fixtures_more import write_spaq


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = SPAQDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = SPAQDataModule(root="/nonexistent")
    assert dm.mos_range == (0.0, 100.0) and dm.higher_better and dm.split == "random"


def test_xlsx_rows_split_and_labels(tmp_path):
    root = write_spaq(tmp_path / "SPAQ", n_images=30)
    dm = make(root, seed=1)
    assert dm.num_records == {"train": 21, "val": 3, "test": 6}
    records = dm.records()
    assert (
        records[0].image_id == "00001.jpg" and records[0].path == root / "TestImage" / "00001.jpg"
    )
    assert records[0].mos_raw == pytest.approx(10.0) and records[-1].mos_raw == pytest.approx(90.0)
    assert dm.to_target(records[0].mos_raw) == pytest.approx(0.1)
    assert dm.to_target(records[-1].mos_raw) > dm.to_target(records[0].mos_raw)


def test_attribute_column(tmp_path):
    dm = make(write_spaq(tmp_path / "s", n_images=30), score_column="Sharpness")
    assert dm.records()[0].mos_raw == pytest.approx(90.0)


def test_csv_export(tmp_path):
    xlsx = make(write_spaq(tmp_path / "a", n_images=20))
    csv = make(write_spaq(tmp_path / "b", n_images=20, labels="csv"))
    assert [(r.image_id, r.mos_raw) for r in csv.records()] == [
        (r.image_id, r.mos_raw) for r in xlsx.records()
    ]


def test_missing_column_names_the_file(tmp_path):
    root = write_spaq(tmp_path / "s", n_images=10)
    with pytest.raises(AnnotationError) as info:
        make(root, score_column="Quality")
    message = str(info.value)
    assert "MOS and Image attribute scores.xlsx" in message and "Quality" in message


def test_pyiqa_layout_with_repeated_exif_column(tmp_path):
    root = write_spaq(tmp_path / "SPAQ", n_images=30, layout="pyiqa")
    dm = make(root, seed=1)
    assert dm.resolved_layout == "pyiqa"
    assert [(r.image_id, r.mos_raw) for r in dm.records()] == [
        (r.image_id, r.mos_raw) for r in make(write_spaq(tmp_path / "x", n_images=30)).records()
    ]
    with pytest.raises(ValueError, match="score_column=Sharpness"):
        make(root, score_column="Sharpness")
