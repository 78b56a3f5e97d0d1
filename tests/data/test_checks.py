import json
import logging
import os
import pickle

import pytest
from PIL import Image

from iqa_lightning.data import (
    DATA_ERRORS,
    AnnotationError,
    ImageCheckError,
    ImageLoadError,
    KADIDDataModule,
    SplitError,
)
from iqa_lightning.data import checks as checks_module
from iqa_lightning.data.checks import check_image_files, check_workers, header_problem

from .fixtures import write_image, write_kadid


def make(root, setup=True, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("split", "per_image_leaky")
    dm = KADIDDataModule(root=root, **kwargs)
    if setup:
        dm.setup("fit")
    return dm


def truncate_jpeg(path):
    """Replace ``path`` with the first half of a 64x64 JPEG: the header parses, the data ends."""
    jpeg = write_image(path.with_name(path.name + ".jpg"), size=(64, 64))
    data = jpeg.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    jpeg.unlink()
    with Image.open(path) as img:
        assert img.size == (64, 64)  # decodes lazily: opening does not see the damage
    return path


def break_png(path):
    data = bytearray(path.read_bytes())
    start = data.find(b"IDAT") + 10
    data[start : start + 40] = b"\x55" * 40
    path.write_bytes(bytes(data))


def damage(root):
    """Break three images in ways that keep the files present; return their names."""
    images = root / "images"
    (images / "I02_01_01.png").write_bytes(b"")
    truncate_jpeg(images / "I03_01_01.png")
    break_png(images / "I04_01_01.png")
    (images / "I05_01_01.png").write_text("not an image")
    return ["I02_01_01.png", "I03_01_01.png", "I04_01_01.png", "I05_01_01.png"]


def test_full_check_lists_every_bad_file_in_one_error(tmp_path):
    root = write_kadid(tmp_path / "k")
    bad = damage(root)
    dm = make(root, setup=False, check_images="full")
    with pytest.raises(ImageCheckError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert isinstance(info.value, ImageLoadError)
    assert "4 of 60 image(s) cannot be used (dataset.check_images=full)" in message
    for name in bad:
        assert str(root / "images" / name) in message
    reasons = {os.path.basename(path): why for path, why in info.value.problems}
    assert sorted(reasons) == bad
    assert "empty" in reasons["I02_01_01.png"]
    assert "truncated" in reasons["I03_01_01.png"].lower()
    assert "cannot identify" in reasons["I05_01_01.png"]
    assert "on_bad_image=skip" in message


def test_check_runs_in_setup_before_any_loader(tmp_path):
    root = write_kadid(tmp_path / "k")
    truncate_jpeg(root / "images" / "I07_02_03.png")
    make(root)  # without the check, setup does not decode
    with pytest.raises(ImageCheckError, match="I07_02_03.png"):
        make(root, check_images="full")


def test_header_check_is_cheap_and_misses_truncated_jpeg_data(tmp_path):
    root = write_kadid(tmp_path / "k")
    damage(root)
    with pytest.raises(ImageCheckError) as info:
        make(root, check_images="header")
    found = sorted(os.path.basename(p) for p, _ in info.value.problems)
    assert found == ["I02_01_01.png", "I04_01_01.png", "I05_01_01.png"]
    assert header_problem(root / "images" / "I03_01_01.png") == ""


def test_missing_files_alone_keep_the_file_not_found_error(tmp_path):
    root = write_kadid(tmp_path / "k")
    (root / "images" / "I01_01_01.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 60 image file"):
        make(root, check_images="full")


def test_missing_and_corrupt_files_are_listed_together(tmp_path):
    root = write_kadid(tmp_path / "k")
    (root / "images" / "I01_01_01.png").unlink()
    truncate_jpeg(root / "images" / "I03_01_01.png")
    with pytest.raises(ImageCheckError) as info:
        make(root, check_images="full")
    reasons = {os.path.basename(p): why for p, why in info.value.problems}
    assert reasons["I01_01_01.png"] == "file does not exist"
    assert "truncated" in reasons["I03_01_01.png"].lower()


def test_skip_mode_with_the_check_skips_and_counts(tmp_path, caplog):
    root = write_kadid(tmp_path / "k")
    bad = damage(root)
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        dm = make(root, check_images="full", on_bad_image="skip")
    assert sorted(os.path.basename(p) for p, _ in dm.skipped) == bad
    assert sum(dm.num_records.values()) == 56
    assert any("skipped 4 of 60" in r.getMessage() for r in caplog.records)
    header = make(root, check_images="header", on_bad_image="skip")
    assert len(header.skipped) == 3  # the truncated JPEG passes the header check


def test_verdicts_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    root = write_kadid(tmp_path / "k")
    truncate_jpeg(root / "images" / "I03_01_01.png")
    cache_dir = tmp_path / "cache" / "preprocessed"
    calls = []
    real = checks_module.image_problem

    def counting(path):
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(checks_module, "image_problem", counting)
    kwargs = {"check_images": "full", "on_bad_image": "skip", "cache_dir": str(cache_dir)}
    first = make(root, **kwargs)
    assert len(calls) == 60 and len(first.skipped) == 1
    files = list((cache_dir / "image_checks").glob("kadid-full-*.json"))
    assert len(files) == 1
    entries = json.loads(files[0].read_text())["images"]
    entry = entries[str(root / "images" / "I03_01_01.png")]
    info = (root / "images" / "I03_01_01.png").stat()
    assert entry[:2] == [info.st_size, info.st_mtime_ns] and "truncated" in entry[2].lower()

    calls.clear()
    second = make(root, **kwargs)
    assert calls == [] and second.skipped == first.skipped

    write_image(root / "images" / "I03_01_01.png", seed=3)  # repaired: new size and mtime
    third = make(root, **kwargs)
    assert calls == ["I03_01_01.png"] and third.skipped == []


def test_unreadable_cache_is_ignored_with_a_warning(tmp_path, caplog):
    root = write_kadid(tmp_path / "k", n_refs=3)
    cache_dir = tmp_path / "cache"
    make(root, check_images="full", cache_dir=str(cache_dir))
    (cache_file,) = (cache_dir / "image_checks").glob("*.json")
    cache_file.write_text("{broken")
    truncate_jpeg(root / "images" / "I01_01_01.png")
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        with pytest.raises(ImageCheckError, match="I01_01_01.png"):
            make(root, check_images="full", cache_dir=str(cache_dir))
    assert any("ignoring unreadable image check cache" in r.getMessage() for r in caplog.records)


def test_no_verdict_file_without_a_cache_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(write_kadid(tmp_path / "k", n_refs=3), check_images="full")
    assert not (tmp_path / ".cache").exists()


def test_check_image_files_keeps_the_order_on_many_threads(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(20)]
    paths[7].write_bytes(b"")
    reasons = check_image_files(paths, "full", workers=4)
    assert [bool(r) for r in reasons] == [i == 7 for i in range(20)]
    assert check_workers(0) >= 1 and check_workers(12) == 12


def test_error_survives_pickling():
    err = ImageCheckError("2 bad", [("a.png", "empty"), ("b.jpg", "truncated")])
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is ImageCheckError and copy.problems == err.problems
    assert str(copy) == "2 bad"


@pytest.mark.parametrize("value", ["fast", True, "on"])
def test_bad_check_level_names_the_key(tmp_path, value):
    with pytest.raises(ValueError, match=r"dataset\.check_images must be one of"):
        make(tmp_path, setup=False, check_images=value)


def test_unquoted_yaml_off_is_off(tmp_path):
    assert make(tmp_path, setup=False, check_images=False).check_images == "off"


# --- prepare_records: everything the data module can check, before a model exists ------------


def test_prepare_records_reads_checks_and_splits(tmp_path):
    dm = make(write_kadid(tmp_path / "k"), setup=False, check_images="full")
    assert dm.prepare_records() == {"train": 42, "val": 6, "test": 12}
    assert dm.prepare_records() == dm.num_records  # idempotent


@pytest.mark.parametrize(
    "breakage,error",
    [
        ("root", FileNotFoundError),
        ("cell", AnnotationError),
        ("range", AnnotationError),
        ("image", ImageCheckError),
        ("split", SplitError),
    ],
)
def test_prepare_records_raises_the_user_error(tmp_path, breakage, error):
    root = write_kadid(tmp_path / "k")
    kwargs = {"check_images": "full"}
    if breakage == "root":
        root = tmp_path / "nowhere"
    elif breakage == "cell":
        labels = root / "dmos.csv"
        labels.write_text(labels.read_text().replace(",4.580,", ",n/a,", 1))
    elif breakage == "range":
        kwargs["mos_range"] = (1, 3)
    elif breakage == "image":
        truncate_jpeg(root / "images" / "I02_02_02.png")
    else:
        kwargs["split_ratios"] = (1.0, 0.0, 0.0)
    dm = make(root, setup=False, **kwargs)
    with pytest.raises(error) as info:
        dm.prepare_records()
    assert isinstance(info.value, DATA_ERRORS)  # the driver prints these as one line
