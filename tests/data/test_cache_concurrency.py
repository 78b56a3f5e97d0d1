"""The preprocessing cache under concurrency: real processes and DataLoader workers."""

import multiprocessing

import numpy as np
import torch

from iqa_lightning.data import ImageCache, image_to_tensor, load_rgb

from .cache_fixtures import entries, koniq
from .fixtures import write_image, write_koniq

# --- concurrency (real processes) ---------------------------------------------------------------


def _build(cache_dir, paths, barrier, reverse):
    cache = ImageCache(cache_dir, 48)
    barrier.wait()
    for path in reversed(paths) if reverse else paths:
        cache.load(path)


def _rewrite(cache_dir, path, rounds, barrier):
    cache = ImageCache(cache_dir, 48)
    pixels = cache.load_array(path)
    barrier.wait()
    for _ in range(rounds):
        cache._write(cache.entry_path(path), pixels)


CTX = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


def _start(target, args_list):
    procs = [CTX.Process(target=target, args=args) for args in args_list]
    for proc in procs:
        proc.start()
    return procs


def _join(procs):
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)


def test_processes_building_at_once_leave_a_valid_cache(tmp_path):
    paths = [write_image(tmp_path / f"{i}.jpg", seed=i, size=(320, 240)) for i in range(24)]
    cache_dir, barrier = tmp_path / "cache", CTX.Barrier(4)
    _join(_start(_build, [(cache_dir, paths, barrier, i % 2 == 1) for i in range(4)]))
    cache = ImageCache(cache_dir, 48)
    assert len(entries(cache_dir)) == len(paths)
    assert not [p for p in cache_dir.rglob("*") if p.is_file() and p.suffix != ".npy"]
    for path in paths:
        assert cache._read(cache.entry_path(path)) is not None  # raises when corrupt
        assert torch.equal(cache.load(path), image_to_tensor(load_rgb(path), 48))


def test_readers_never_see_a_torn_entry_while_others_write(tmp_path):
    path = write_image(tmp_path / "a.jpg", size=(320, 240))
    cache_dir = tmp_path / "cache"
    expected = ImageCache(cache_dir, 48).load_array(path)
    barrier = CTX.Barrier(3)
    writers = _start(_rewrite, [(cache_dir, path, 300, barrier)] * 2)
    reader = ImageCache(cache_dir, 48)
    entry = reader.entry_path(path)
    barrier.wait()
    reads = 0
    while any(proc.is_alive() for proc in writers) or reads < 50:
        assert np.array_equal(reader._read(entry), expected)  # a torn read raises or differs
        reads += 1
    _join(writers)
    assert entries(cache_dir) == [entry]


def test_dataloader_workers_fill_the_cache(tmp_path):
    root = write_koniq(tmp_path / "koniq", n_images=30)
    dm = koniq(root, tmp_path / "cache", num_workers=2, hflip=False)
    first = [b["pixels"] for b in dm._loader("train", 4, shuffle=False)]
    assert len(entries(tmp_path / "cache")) == dm.num_records["train"]
    second = [b["pixels"] for b in dm._loader("train", 4, shuffle=False)]
    assert torch.equal(torch.cat(first), torch.cat(second))
