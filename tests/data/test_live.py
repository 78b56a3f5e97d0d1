import numpy as np
import pytest
from scipy.io import savemat

from iqa_lightning.data import AnnotationError, LIVEDataModule

from .fixtures_more import write_live


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = LIVEDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = LIVEDataModule(root="/nonexistent")
    assert dm.mos_range == (0.0, 100.0) and dm.higher_better is False
    assert dm.split == "reference_disjoint" and dm.name == "live" and dm.layout == "auto"


def test_rows_references_left_out_and_disjoint_split(tmp_path):
    root = write_live(tmp_path / "LIVEIQA_release2", n_refs=10)
    dm = make(root)
    assert dm.resolved_layout == "published"
    assert dm.num_records == {"train": 35, "val": 5, "test": 10}
    refs = {s: {r.ref_id for r in dm.records(s)} for s in ("train", "val", "test")}
    assert [len(refs[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert not (
        refs["train"] & refs["val"] or refs["train"] & refs["test"] or refs["val"] & refs["test"]
    )
    by_id = {r.image_id: r for r in dm.records()}
    assert set(by_id) == {
        f"{f}/img{k}.bmp"
        for f in ("jp2k", "jpeg", "wn", "gblur", "fastfading")
        for k in range(1, 11)
    }
    first_jpeg = by_id["jpeg/img1.bmp"]  # entry 228 of the .mat files
    assert first_jpeg.mos_raw == pytest.approx(30.0) and first_jpeg.ref_id == "bikes.bmp"
    assert first_jpeg.path == root / "jpeg" / "img1.bmp"


def test_dmos_is_flipped(tmp_path):
    dm = make(write_live(tmp_path / "l"))
    by_id = {r.image_id: r for r in dm.records()}
    mild, severe = by_id["jp2k/img1.bmp"], by_id["fastfading/img10.bmp"]
    assert mild.mos_raw < severe.mos_raw
    assert dm.to_target(mild.mos_raw) > dm.to_target(severe.mos_raw)
    assert dm.to_target(0.0) == 1.0 and dm.to_target(100.0) == 0.0
    assert all(0.0 <= dm.to_target(r.mos_raw) <= 1.0 for r in dm.records())
    batch = next(iter(dm.val_dataloader()))
    assert np.allclose(batch["target"].numpy(), 1 - batch["mos_raw"].numpy() / 100, atol=1e-6)


def test_realigned_dmos_file(tmp_path):
    root = write_live(tmp_path / "l")
    from scipy.io import loadmat

    data = loadmat(root / "dmos.mat")
    savemat(root / "dmos_realigned.mat", {"dmos_new": data["dmos"] + 1.0, "orgs": data["orgs"]})
    dm = make(root, dmos_file="dmos_realigned.mat")
    assert {r.image_id: r for r in dm.records()}["jp2k/img1.bmp"].mos_raw == pytest.approx(21.0)


def test_wrong_number_of_entries(tmp_path):
    root = write_live(tmp_path / "l")
    savemat(root / "dmos.mat", {"dmos": np.zeros((1, 10)), "orgs": np.zeros((1, 10))})
    with pytest.raises(AnnotationError, match=r"982 entries .*dmos\.mat:dmos': 10"):
        make(root)


def test_missing_variable_names_the_file(tmp_path):
    root = write_live(tmp_path / "l")
    savemat(root / "dmos.mat", {"scores": np.zeros((1, 982)), "orgs": np.zeros((1, 982))})
    with pytest.raises(AnnotationError) as info:
        make(root)
    assert "dmos.mat" in str(info.value) and "'scores'" in str(info.value)


def test_missing_refnames(tmp_path):
    root = write_live(tmp_path / "l")
    (root / "refnames_all.mat").unlink()
    with pytest.raises(FileNotFoundError, match="refnames_all.mat"):
        make(root)


def test_pyiqa_layout_matches_published(tmp_path):
    published = make(write_live(tmp_path / "a" / "LIVEIQA_release2"))
    pyiqa = make(write_live(tmp_path / "b" / "LIVEIQA_release2", layout="pyiqa"))
    assert pyiqa.resolved_layout == "pyiqa"
    assert [(r.image_id, r.mos_raw, r.ref_id) for r in pyiqa.records()] == [
        (r.image_id, r.mos_raw, r.ref_id) for r in published.records()
    ]
    assert pyiqa.split_table() == published.split_table()


def test_pyiqa_meta_without_bmp_suffix(tmp_path):
    root = write_live(tmp_path / "l", layout="pyiqa")
    meta = root.parent / "meta_info" / "meta_info_LIVEIQADataset.csv"
    meta.write_text(
        meta.read_text().replace(".bmp,", ",").replace("refimgs/bikes,", "refimgs/bikes.bmp,")
    )
    dm = make(root)
    assert dm.records()[0].image_id == "jp2k/img1.bmp" and dm.records()[0].path.is_file()
