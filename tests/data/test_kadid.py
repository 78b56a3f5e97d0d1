import csv

import pytest
import torch

from iqa_lightning.data import AnnotationError, KADIDDataModule

from .fixtures import kadid_score, write_kadid


def make(root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = KADIDDataModule(root=root, **kwargs)
    dm.setup("fit")
    return dm


def test_defaults():
    dm = KADIDDataModule(root="/nonexistent")
    assert dm.mos_range == (1.0, 5.0) and dm.higher_better is True
    assert dm.split == "reference_disjoint" and dm.name == "kadid"


def test_rows_and_reference_disjoint_split(tmp_path):
    root = write_kadid(tmp_path / "kadid10k", n_refs=10, n_types=2, n_levels=3)
    dm = make(root)
    assert sum(dm.num_records.values()) == 60
    assert dm.num_records == {"train": 42, "val": 6, "test": 12}
    refs = {name: {r.ref_id for r in dm.records(name)} for name in ("train", "val", "test")}
    assert [len(refs[n]) for n in ("train", "val", "test")] == [7, 1, 2]
    assert not (
        refs["train"] & refs["val"] or refs["train"] & refs["test"] or refs["val"] & refs["test"]
    )
    record = dm.records()[0]
    assert record.path == root / "images" / record.image_id
    assert record.ref_id == record.image_id[:3] + ".png"


def test_labels_direction_and_range(tmp_path):
    root = write_kadid(tmp_path / "k", n_refs=10, n_types=1, n_levels=3)
    dm = make(root)
    by_id = {r.image_id: r for r in dm.records()}
    assert by_id["I01_01_01.png"].mos_raw == pytest.approx(kadid_score(1, 1, 3), abs=1e-3)
    assert dm.to_target(by_id["I01_01_01.png"].mos_raw) > dm.to_target(
        by_id["I01_01_03.png"].mos_raw
    )
    targets = [dm.to_target(r.mos_raw) for r in dm.records()]
    assert all(0.0 <= t <= 1.0 for t in targets)
    assert dm.to_target(1.0) == 0.0 and dm.to_target(5.0) == 1.0 and dm.to_target(3.0) == 0.5


def test_batch_contents(tmp_path):
    dm = make(write_kadid(tmp_path / "k"), image_size=20, hflip=False)
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"pixels", "target", "mos_raw", "image_id", "target_std"}
    # dmos.csv's var 0.25 on the 1-5 scale: std 0.5, a quarter of that in target units
    assert torch.allclose(batch["target_std"], torch.full((4,), 0.125))
    assert batch["pixels"].shape == (4, 3, 20, 20) and batch["pixels"].dtype == torch.float32
    assert 0.0 <= batch["pixels"].min() and batch["pixels"].max() <= 1.0
    assert batch["target"].shape == (4,) and batch["target"].dtype == torch.float32
    assert batch["mos_raw"].dtype == torch.float32
    assert isinstance(batch["image_id"], list) and isinstance(batch["image_id"][0], str)
    expected = torch.tensor([(m - 1) / 4 for m in batch["mos_raw"].tolist()])
    assert torch.allclose(batch["target"], expected, atol=1e-6)


def test_split_csv(tmp_path):
    dm = make(write_kadid(tmp_path / "k"))
    (tmp_path / "run").mkdir()
    path = dm.write_split(tmp_path / "run")
    assert path == tmp_path / "run" / "split.csv"
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image_id", "split"]
    assert [tuple(r) for r in rows[1:]] == dm.split_table()
    assert len(rows) - 1 == sum(dm.num_records.values())
    assert {r[1] for r in rows[1:]} == {"train", "val", "test"}
    explicit = dm.write_split(tmp_path / "elsewhere" / "my_split.csv")
    assert explicit.read_text() == path.read_text()


def test_missing_layout_lists_files_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    dm = KADIDDataModule(root=tmp_path / "empty")
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert "dmos.csv" in message and "images" in message


def test_missing_column_in_dmos_csv(tmp_path):
    root = write_kadid(tmp_path / "k", n_refs=3)
    text = (root / "dmos.csv").read_text().replace("ref_img", "reference", 1)
    (root / "dmos.csv").write_text(text)
    with pytest.raises(AnnotationError) as info:
        make(root)
    assert "dmos.csv" in str(info.value) and "ref_img" in str(info.value)


def test_empty_reference_cell(tmp_path):
    root = write_kadid(tmp_path / "k", n_refs=3)
    lines = (root / "dmos.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[1] = ""
    lines[2] = ",".join(cells)
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match="line 3, column 'ref_img'"):
        make(root)


def test_random_split_refused_and_leaky_allowed(tmp_path):
    root = write_kadid(tmp_path / "k")
    with pytest.raises(ValueError, match="per_image_leaky"):
        make(root, split="random")
    dm = make(root, split="per_image_leaky")
    assert sum(dm.num_records.values()) == 60
