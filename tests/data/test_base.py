import csv
import gc
import logging

import pytest
import torch

from iqa_lightning.data import (
    ImageLoadError,
    IQADataModule,
    KADIDDataModule,
    image_to_tensor,
    load_rgb,
)

from .fixtures import write_image, write_kadid


def make(root, setup=True, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = KADIDDataModule(root=root, **kwargs)
    if setup:
        dm.setup("fit")
    return dm


def damage(root):
    """Break four images: missing, zero-byte, truncated JPEG, undecodable PNG."""
    images = root / "images"
    (images / "I01_01_01.png").unlink()
    (images / "I02_01_01.png").write_bytes(b"")
    jpeg = write_image(images / "I03_01_01.png.jpg", size=(64, 64))
    (images / "I03_01_01.png").write_bytes(jpeg.read_bytes()[:200])
    jpeg.unlink()
    png = bytearray((images / "I04_01_01.png").read_bytes())
    start = png.find(b"IDAT") + 10
    png[start : start + 40] = b"\x55" * 40
    (images / "I04_01_01.png").write_bytes(bytes(png))
    return ["I01_01_01.png", "I02_01_01.png", "I03_01_01.png", "I04_01_01.png"]


def test_base_class_is_abstract():
    with pytest.raises(TypeError):
        IQADataModule(root=".")


def test_root_that_does_not_exist(tmp_path):
    missing = tmp_path / "no" / "kadid10k"
    dm = make(missing, setup=False)
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    assert str(missing) in str(info.value) and "dataset.root" in str(info.value)


def test_missing_image_in_error_mode_lists_count_and_paths(tmp_path):
    root = write_kadid(tmp_path / "k")
    (root / "images" / "I01_01_01.png").unlink()
    (root / "images" / "I05_02_03.png").unlink()
    with pytest.raises(FileNotFoundError) as info:
        make(root)
    message = str(info.value)
    assert "2 of 60" in message
    assert str(root / "images" / "I01_01_01.png") in message
    assert str(root / "images" / "I05_02_03.png") in message
    assert "on_bad_image=skip" in message


def test_corrupt_image_in_error_mode_raises_when_loaded(tmp_path):
    root = write_kadid(tmp_path / "k")
    bad = damage(root)[1:]  # keep files present, only corrupt
    write_image(root / "images" / "I01_01_01.png", seed=1)
    dm = make(root, split="per_image_leaky", batch_size=100, eval_batch_size=100)
    loaders = [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()]
    messages = []
    for loader in loaders:
        try:
            for _ in loader:
                pass
        except ImageLoadError as err:
            messages.append(str(err))
    assert messages, "a corrupt image must raise"
    assert all(any(name in m for name in bad) for m in messages)


def test_corrupt_image_error_type_survives_worker(tmp_path, monkeypatch):
    # torch waits this long for a worker that raised before terminating it; keep the test fast
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.2)
    root = write_kadid(tmp_path / "k", n_refs=10, n_types=1, n_levels=1)
    for name in ("I01_01_01.png", "I02_01_01.png", "I03_01_01.png", "I04_01_01.png"):
        (root / "images" / name).write_bytes(b"garbage")
    dm = make(root, num_workers=1, batch_size=10, eval_batch_size=10)
    loader = dm.train_dataloader()
    assert loader.persistent_workers is True
    caught = None
    try:
        for _ in loader:
            pass
    except ImageLoadError as err:
        caught = str(err)
    del loader
    gc.collect()
    assert caught is not None and "cannot load image" in caught


def test_skip_mode_counts_lists_logs_and_writes(tmp_path, caplog):
    root = write_kadid(tmp_path / "k")
    bad = damage(root)
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        dm = make(root, on_bad_image="skip")
    assert sum(dm.num_records.values()) == 56
    assert sorted(p.split("/")[-1] for p, _ in dm.skipped) == bad
    reasons = dict((p.split("/")[-1], r) for p, r in dm.skipped)
    assert reasons["I01_01_01.png"] == "file does not exist"
    assert "empty" in reasons["I02_01_01.png"]
    assert all(reasons[name] for name in bad)
    assert any("skipped 4" in rec.getMessage() for rec in caplog.records)
    kept = {image_id for image_id, _ in dm.split_table()}
    assert not kept & set(bad)
    path = dm.write_skipped(tmp_path / "skipped.csv")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image_id", "path", "reason"]
    assert sorted(r[0] for r in rows[1:]) == bad
    assert all(r[1].endswith(r[0]) and r[2] for r in rows[1:])
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for _ in loader:
            pass


def test_skip_mode_keeps_the_split_of_the_remaining_images(tmp_path):
    clean = make(write_kadid(tmp_path / "a"), split="per_image_leaky")
    root = write_kadid(tmp_path / "b")
    bad = damage(root)
    skipped = make(root, on_bad_image="skip", split="per_image_leaky")
    expected = [row for row in clean.split_table() if row[0] not in bad]
    assert skipped.split_table() == expected


def test_mos_outside_range_names_image_and_key(tmp_path):
    root = write_kadid(tmp_path / "k")
    with pytest.raises(ValueError) as info:
        make(root, mos_range=(1, 4))
    message = str(info.value)
    assert "dataset.mos_range" in message and "I01_01_01.png" in message and "[1, 4]" in message


def test_mos_range_tolerance(tmp_path):
    root = write_kadid(tmp_path / "k")
    top = max(r.mos_raw for r in make(root).records())
    dm = make(root, mos_range=(1, top - 5e-7))
    assert max(dm.to_target(r.mos_raw) for r in dm.records()) == 1.0


def test_lower_is_better_flips_targets(tmp_path):
    root = write_kadid(tmp_path / "k")
    up = make(root, hflip=False)
    down = make(root, higher_better=False, hflip=False)
    for a, b in zip(
        next(iter(up.val_dataloader()))["target"],
        next(iter(down.val_dataloader()))["target"],
        strict=True,
    ):
        assert a.item() == pytest.approx(1 - b.item())


def test_train_loader_shuffles_seeded_and_drops_nothing(tmp_path):
    root = write_kadid(tmp_path / "k")
    dm = make(root, batch_size=5, seed=7)
    ids = [i for batch in dm.train_dataloader() for i in batch["image_id"]]
    assert sorted(ids) == sorted(r.image_id for r in dm.records("train"))
    assert len(ids) == 42  # 42 = 8 * 5 + 2: the last partial batch is kept
    assert ids != [r.image_id for r in dm.records("train")]
    again = [
        i
        for batch in make(root, batch_size=5, seed=7).train_dataloader()
        for i in batch["image_id"]
    ]
    assert ids == again


def test_eval_loaders_keep_order_and_do_not_flip(tmp_path):
    dm = make(write_kadid(tmp_path / "k"), eval_batch_size=3, hflip=True)
    assert dm.eval_batch_size == 3
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        batches = list(loader)
        records = dm.records(split)
        assert [i for b in batches for i in b["image_id"]] == [r.image_id for r in records]
        pixels = torch.cat([b["pixels"] for b in batches])
        expected = torch.stack([image_to_tensor(load_rgb(r.path), 16) for r in records])
        assert torch.equal(pixels, expected)


def test_train_flip_happens_and_only_horizontally(tmp_path):
    dm = make(write_kadid(tmp_path / "k"), hflip=True)
    dataset = dm.dataset("train")
    reference = image_to_tensor(load_rgb(dataset.items[0].path), 16)
    torch.manual_seed(0)
    seen = {"plain": 0, "flipped": 0}
    for _ in range(20):
        pixels = dataset[0]["pixels"]
        if torch.equal(pixels, reference):
            seen["plain"] += 1
        else:
            assert torch.equal(pixels, reference.flip(-1))
            seen["flipped"] += 1
    assert seen["plain"] and seen["flipped"]


def test_eval_batch_size_defaults_to_batch_size(tmp_path):
    dm = make(tmp_path, setup=False, batch_size=6)
    assert dm.eval_batch_size == 6
    assert dm.train_dataloader is not None


def test_paths_with_spaces_and_unicode(tmp_path):
    root = write_kadid(tmp_path / "my data" / "ünï 数据 set", n_refs=10, n_types=1, n_levels=2)
    dm = make(root)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixels"].shape[1:] == (3, 16, 16)


def test_setup_is_idempotent_and_required(tmp_path):
    dm = make(write_kadid(tmp_path / "k"), setup=False)
    with pytest.raises(RuntimeError, match="setup"):
        _ = dm.num_records
    dm.setup("fit")
    first = dm.split_table()
    dm.setup("test")
    assert dm.split_table() == first


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"on_bad_image": "ignore"}, "dataset.on_bad_image"),
        ({"split": "stratified"}, "dataset.split"),
        ({"split_ratios": (0.5, 0.5, 0.5)}, "dataset.split_ratios"),
        ({"mos_range": (5, 1)}, "dataset.mos_range"),
        ({"mos_range": (1,)}, "dataset.mos_range"),
        ({"image_size": 0}, "dataset.image_size"),
        ({"batch_size": "big"}, "dataset.batch_size"),
        ({"num_workers": -1}, "dataset.num_workers"),
        ({"num_workers": "two"}, "dataset.num_workers"),
        ({"seed": None}, "dataset.seed"),
    ],
)
def test_bad_arguments_name_the_config_key(tmp_path, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        KADIDDataModule(root=tmp_path, **kwargs)


def test_list_arguments_from_config_are_accepted(tmp_path):
    dm = make(write_kadid(tmp_path / "k"), mos_range=[1, 5], split_ratios=[0.7, 0.1, 0.2])
    assert dm.mos_range == (1.0, 5.0) and dm.split_ratios == (0.7, 0.1, 0.2)
