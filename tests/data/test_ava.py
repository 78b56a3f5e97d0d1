"""AVA in its published layout (AVA.txt, images/<id>.jpg) and pyiqa's (meta_info_AVADataset.csv,
its official split column), on generated trees: the MOS is the mean of the 1..10 histogram."""

import csv
from pathlib import Path

import pytest

from iqa_lightning.data import AnnotationError, AVADataModule
from iqa_lightning.data.datasets.ava import ava_mos

from .fixtures import write_image

IMAGES = 20


def _counts(i: int) -> list[int]:
    """A distinct rating histogram per image (ratings 1 .. 10)."""
    return [(i * (r + 3)) % 7 + (r in (2, 5, 9)) for r in range(1, 11)]


def write_ava(root: Path, images: int = IMAGES) -> Path:
    """AVA.txt as published: index, image id, 10 counts, 2 tags, challenge id; images/<id>.jpg."""
    lines = []
    for i in range(images):
        image_id = 100 + i
        write_image(root / "images" / f"{image_id}.jpg", seed=i)
        counts = " ".join(map(str, _counts(i)))
        lines.append(f"{i + 1} {image_id} {counts} {i % 5} 0 {1396 + i % 3}")
    (root / "AVA.txt").write_text("\n".join(lines) + "\n")
    return root


def write_ava_pyiqa(root: Path, images: int = IMAGES) -> Path:
    """pyiqa's meta_info_AVADataset.csv (its header and split codes) with ava_images/."""
    header = ["img_name", "MOS", *(f"c{i}" for i in range(1, 11)),
              "semantic_tag1", "semantic_tag2", "official split", "ILGnet split"]  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    with (root / "meta_info_AVADataset.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(images):
            name = f"{100 + i}.jpg"
            write_image(root / "ava_images" / name, seed=i)
            mos, _ = ava_mos(tuple(_counts(i)))
            writer.writerow([name, f"{mos:.3}", *_counts(i), 0, 0, 2 if i % 4 == 0 else 0, 0])
    return root


def test_mos_is_the_mean_of_the_rating_histogram(tmp_path):
    dm = AVADataModule(root=write_ava(tmp_path / "ava"), image_size=16, num_workers=0)
    dm.prepare_records()
    records = {r.image_id: r for r in dm.records()}
    assert len(records) == IMAGES
    counts = _counts(3)
    expected = sum(r * c for r, c in zip(range(1, 11), counts, strict=True)) / sum(counts)
    assert records["103.jpg"].mos_raw == pytest.approx(expected)
    assert records["103.jpg"].path == tmp_path / "ava" / "images" / "103.jpg"
    assert ava_mos((0, 0, 0, 0, 2, 0, 0, 0, 0, 2)) == pytest.approx((7.5, 2.5))


def test_histogram_target_carries_the_ten_counts(tmp_path):
    dm = AVADataModule(root=write_ava(tmp_path / "ava"), target="histogram", image_size=16,
                       num_workers=0)  # fmt: skip
    dm.prepare_records()
    record = next(r for r in dm.records() if r.image_id == "105.jpg")
    assert record.rating_counts == tuple(float(c) for c in _counts(5))


def test_pyiqa_layout_and_its_official_split(tmp_path):
    root = write_ava_pyiqa(tmp_path / "pyiqa")
    dm = AVADataModule(root=root, split="pyiqa", split_column="official split", image_size=16,
                       num_workers=0)  # fmt: skip
    dm.prepare_records()
    test = {r.image_id for r in dm.records("test")}
    assert test == {f"{100 + i}.jpg" for i in range(IMAGES) if i % 4 == 0}
    published = AVADataModule(root=write_ava(tmp_path / "ava"), image_size=16, num_workers=0)
    published.prepare_records()
    means = {r.image_id: r.mos_raw for r in published.records()}
    assert {r.image_id: r.mos_raw for r in dm.records()} == pytest.approx(means)


def test_a_bad_line_names_the_file_and_line(tmp_path):
    root = write_ava(tmp_path / "ava")
    text = (root / "AVA.txt").read_text().splitlines()
    text[2] = "3 102 1 2 3"
    (root / "AVA.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(AnnotationError, match=r"AVA\.txt, line 3: expected 15 fields"):
        AVADataModule(root=root, image_size=16, num_workers=0).prepare_records()
    text[2] = "3 102 " + " ".join(["0"] * 10) + " 0 0 1396"
    (root / "AVA.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(AnnotationError, match=r"line 3: no ratings"):
        AVADataModule(root=root, image_size=16, num_workers=0).prepare_records()
