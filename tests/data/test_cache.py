"""The optional preprocessing cache: exact pixels, rebuilds, corruption, bad images, flips.

Concurrency is in ``test_cache_concurrency.py``, configuration in ``test_cache_config.py``.
"""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from iqa_lightning.data import (
    ImageCache,
    ImageLoadError,
    KADIDDataModule,
    image_to_tensor,
    load_rgb,
)
from iqa_lightning.data import cache as cache_module
from iqa_lightning.data.images import array_to_tensor, collate_samples, flip_left_right

from .cache_fixtures import SIZE, entries, koniq
from .fixtures import write_image, write_kadid, write_koniq


def odd_images(folder):
    """Files that exercise the decode rules: gray, alpha, palette, 16-bit, EXIF-rotated."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = lambda *shape, top=256: rng.integers(0, top, (20, 30, *shape))  # noqa: E731
    Image.fromarray(pixels().astype(np.uint8)).save(folder / "gray.png")
    Image.fromarray(pixels(4).astype(np.uint8), mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(pixels(3).astype(np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray(pixels(top=65536).astype(np.uint16)).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels(3).astype(np.uint8)).save(folder / "rotated.jpg", exif=exif)
    return sorted(folder.iterdir())


# --- same pixels -------------------------------------------------------------------------


def test_cached_pixels_equal_uncached_bit_for_bit(tmp_path):
    root = write_koniq(tmp_path / "koniq", n_images=20, size=(64, 48))
    plain = koniq(root, None, hflip=False).dataset("train")
    cached = koniq(root, tmp_path / "cache", hflip=False).dataset("train")
    assert plain.cache is None and cached.cache is not None
    for index in range(len(plain)):
        expected = plain[index]["pixels"]
        miss, hit = cached[index]["pixels"], cached[index]["pixels"]
        assert miss.dtype == hit.dtype == torch.float32
        assert torch.equal(miss, expected) and torch.equal(hit, expected)
    assert len(entries(tmp_path / "cache")) == len(plain)


def test_loaders_give_the_same_batches_with_and_without_cache(tmp_path):
    root = write_kadid(tmp_path / "kadid")
    plain = KADIDDataModule(root=root, image_size=SIZE)
    cached = KADIDDataModule(root=root, image_size=SIZE, cache=True, cache_dir=tmp_path / "c")
    for dm in (plain, cached):
        dm.setup("fit")
    for split in ("val", "test", "val"):  # the second val pass reads the entries back
        a = torch.cat([b["pixels"] for b in plain._loader(split, 7, shuffle=False)])
        assert torch.equal(a, torch.cat([b["pixels"] for b in cached._loader(split, 7, False)]))


def test_float_conversion_and_flip_match_torch_bit_for_bit():
    array = np.random.default_rng(0).permutation(256 * 3).reshape(16, 16, 3) % 256
    array = array.astype(np.uint8)
    expected = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
    assert torch.equal(array_to_tensor(array), expected)
    assert torch.equal(array_to_tensor(flip_left_right(array)), expected.flip(-1))


def test_main_process_collate_equals_default_collate(tmp_path):
    dataset = koniq(write_koniq(tmp_path / "koniq", n_images=10), None).dataset("train")
    samples = [dataset[i] for i in range(4)]
    batch, expected = collate_samples(samples), default_collate(samples)
    keys = ["pixels", "target", "mos_raw", "image_id", "target_std"]  # KonIQ carries its SD
    assert list(batch) == list(expected) == keys
    assert all(torch.equal(batch[k], expected[k]) for k in keys if k != "image_id")
    assert batch["image_id"] == expected["image_id"]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "lanczos", "nearest"])
def test_every_decode_rule_round_trips_exactly(tmp_path, interpolation):
    cache = ImageCache(tmp_path / "cache", SIZE, interpolation)
    for path in odd_images(tmp_path / "images"):
        expected = image_to_tensor(load_rgb(path), SIZE, interpolation)
        assert torch.equal(cache.load(path), expected), path.name
        assert torch.equal(cache.load(path), expected), path.name
        stored = np.load(cache.entry_path(path))  # a plain .npy for inspection
        assert stored.shape == (SIZE, SIZE, 3) and stored.dtype == np.uint8
        assert torch.equal(torch.from_numpy(stored).permute(2, 0, 1) / 255.0, expected)


def test_a_hit_reads_the_entry_and_does_not_decode(tmp_path, monkeypatch):
    root = write_koniq(tmp_path / "koniq", n_images=10)
    first = koniq(root, tmp_path / "cache", hflip=False).dataset("train")
    expected = [first[i]["pixels"] for i in range(len(first))]

    def no_decode(path):
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(cache_module, "load_rgb", no_decode)
    again = koniq(root, tmp_path / "cache", hflip=False).dataset("train")  # a later run
    for index, pixels in enumerate(expected):
        assert torch.equal(again[index]["pixels"], pixels)


# --- what rebuilds ---------------------------------------------------------------------------


def test_image_size_and_interpolation_change_the_key(tmp_path):
    path = write_image(tmp_path / "a.jpg", size=(64, 48))
    caches = [
        ImageCache(tmp_path / "c", 16),
        ImageCache(tmp_path / "c", 24),
        ImageCache(tmp_path / "c", 16, "bilinear"),
    ]
    assert len({c.entry_path(path) for c in caches}) == 3
    for cache in caches:
        expected = image_to_tensor(load_rgb(path), cache.image_size, cache.interpolation)
        assert torch.equal(cache.load(path), expected)
    assert len(entries(tmp_path / "c")) == 3
    assert ImageCache(tmp_path / "c", 16).entry_path(path) == caches[0].entry_path(path)


def test_image_size_change_in_the_data_module_rebuilds(tmp_path):
    root = write_koniq(tmp_path / "koniq", n_images=10)
    for size in (16, 24):
        dataset = koniq(root, tmp_path / "cache", image_size=size, hflip=False).dataset("val")
        assert dataset[0]["pixels"].shape == (3, size, size)
        assert torch.equal(
            dataset[0]["pixels"], image_to_tensor(load_rgb(dataset.items[0].path), size)
        )
    assert {p.parent.parent.name for p in entries(tmp_path / "cache")} == {
        "16px-bicubic",
        "24px-bicubic",
    }


def test_a_changed_file_is_rebuilt(tmp_path):
    path = write_image(tmp_path / "a.png", seed=1, size=(40, 30))
    cache = ImageCache(tmp_path / "cache", SIZE)
    old = cache.load(path)
    old_entry = cache.entry_path(path)
    write_image(path, seed=2, size=(40, 30))
    stamp = os.stat(path).st_mtime_ns + 10**9  # a new mtime even where timestamps are coarse
    os.utime(path, ns=(stamp, stamp))
    new = cache.load(path)
    assert cache.entry_path(path) != old_entry
    assert torch.equal(new, image_to_tensor(load_rgb(path), SIZE))
    assert not torch.equal(new, old)


def test_a_moved_file_gets_a_new_entry(tmp_path):
    cache = ImageCache(tmp_path / "cache", SIZE)
    path = write_image(tmp_path / "a" / "x.png", size=(40, 30))
    assert cache.entry_path(path) != cache.entry_path(path.rename(tmp_path / "x.png"))


# --- corrupt entries ---------------------------------------------------------------------------


def _flip_a_pixel_bit(data):
    return data[:200] + bytes([data[200] ^ 0x10]) + data[201:]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        _flip_a_pixel_bit,
        lambda data: data.replace(b"(16, 16, 3)", b"(16, 3, 16)"),
        lambda data: data + b"\0",
        lambda data: b"",
        lambda data: b"not a numpy file at all" * 40,
    ],
    ids=["truncated", "bit-flip", "header", "too-long", "empty", "garbage"],
)
def test_a_corrupt_entry_is_detected_and_rebuilt(tmp_path, caplog, damage):
    path = write_image(tmp_path / "a.jpg", size=(64, 48))
    cache = ImageCache(tmp_path / "cache", SIZE)
    expected = cache.load(path)
    entry = cache.entry_path(path)
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        assert torch.equal(cache.load(path), expected)
    assert any("corrupt cache entry" in r.getMessage() for r in caplog.records)
    assert str(path) in caplog.text
    assert entry.read_bytes() == good


def test_an_unwritable_cache_warns_once_and_still_serves_pixels(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    cache = ImageCache(tmp_path / "file" / "cache", SIZE)
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        for path in paths:
            assert torch.equal(cache.load(path), image_to_tensor(load_rgb(path), SIZE))
    warnings = [r for r in caplog.records if "dataset.cache_dir" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "file" / "cache") in warnings[0].getMessage()


# --- bad images behave as without the cache --------------------------------------------------


def test_missing_and_undecodable_images_raise_the_usual_error(tmp_path):
    cache = ImageCache(tmp_path / "cache", SIZE)
    missing = tmp_path / "gone.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    for path, reason in ((missing, "file does not exist"), (broken, "")):
        with pytest.raises(ImageLoadError) as info:
            cache.load(path)
        assert str(path) in str(info.value) and reason in str(info.value)
        with pytest.raises(ImageLoadError) as plain:
            load_rgb(path)
        assert str(info.value) == str(plain.value)
    assert not entries(tmp_path / "cache")


def test_skip_mode_with_cache(tmp_path):
    root = write_kadid(tmp_path / "k")
    (root / "images" / "I02_01_01.png").write_bytes(b"")
    (root / "images" / "I03_01_01.png").unlink()
    dm = KADIDDataModule(
        root=root, image_size=SIZE, on_bad_image="skip", cache=True, cache_dir=tmp_path / "c"
    )
    dm.setup("fit")
    assert len(dm.skipped) == 2
    seen = sum(
        len(b["image_id"]) for s in ("train", "val", "test") for b in dm._loader(s, 8, False)
    )
    assert seen == 58 == len(entries(tmp_path / "c"))


# --- flips stay on the fly -------------------------------------------------------------------


def _flips(batches, reference):
    flags = {}
    for batch in batches:
        for image_id, pixels in zip(batch["image_id"], batch["pixels"], strict=True):
            if torch.equal(pixels, reference[image_id]):
                flags[image_id] = False
            else:
                assert torch.equal(pixels, reference[image_id].flip(-1))
                flags[image_id] = True
    return flags


@pytest.mark.parametrize("num_workers", [0, 1])
def test_flips_are_random_per_epoch_after_the_cache(tmp_path, num_workers):
    root = write_koniq(tmp_path / "koniq", n_images=60)
    dm = koniq(root, tmp_path / "cache", num_workers=num_workers, hflip=True)
    reference = {
        item.image_id: image_to_tensor(load_rgb(item.path), SIZE)
        for item in dm.dataset("train").items
    }
    loader = dm.train_dataloader()
    epochs = [_flips(loader, reference) for _ in range(3)]
    assert len(entries(tmp_path / "cache")) == len(reference)
    for flags in epochs:
        assert len(flags) == len(reference) and 0 < sum(flags.values()) < len(flags)
    assert epochs[0] != epochs[1] != epochs[2]
    assert not any(dm.dataset(s).hflip for s in ("val", "test"))
