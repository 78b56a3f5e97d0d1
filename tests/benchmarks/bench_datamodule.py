"""Images per second through the DataModule's train loader, with and without the cache.

    python tests/benchmarks/bench_datamodule.py                      # 128 images, 336 px
    python tests/benchmarks/bench_datamodule.py --images 64 --size 448 --workers 0 2 4
    python tests/benchmarks/bench_datamodule.py --smoke    # 10 small JPEGs, one round: still runs?

Writes ``--images`` 1024x768 JPEGs in KonIQ-10k's layout to a temporary folder and measures, in
one process and interleaved round by round (so drift in machine load hits every row alike):

- ``bare PIL``: a plain loop ``Image.open -> convert("RGB") -> resize(bicubic) -> np.asarray``
  over the training images, the floor for any decoding pipeline;
- the KonIQ DataModule's ``train_dataloader()`` (shuffle, flips, batching) uncached and cached,
  at each ``--workers`` count. Every loader runs one untimed epoch first (worker start-up; for
  the cache, the epoch that fills it, reported separately as ``cache build``).

Rates are the best of ``--rounds`` rounds (the least disturbed by other processes on a shared
machine; the median is printed next to it) and the ratios use the best rates.

Goals: cached >= 3x uncached; uncached >= 0.9x the bare loop (at 0 workers, same process).
Not part of the test run (pytest ignores tests/benchmarks); ``--smoke`` is, in
tests/test_benchmarks_smoke.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from iqa_lightning.data import KonIQDataModule  # noqa: E402
from tests.data.fixtures import write_koniq  # noqa: E402


def bare_pass(paths: list[Path], size: int) -> float:
    """Seconds for one decode + resize pass over ``paths`` with nothing but PIL."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    return time.perf_counter() - start


def loader_pass(loader) -> tuple[float, int]:
    """Seconds and images for one epoch of ``loader``."""
    start = time.perf_counter()
    count = sum(len(batch["image_id"]) for batch in loader)
    return time.perf_counter() - start, count


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="JPEGs to generate (70%% train)")
    parser.add_argument("--size", type=int, default=336, help="model input side (LLaVA-1.5: 336)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (best reported)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per loader per round")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--smoke", action="store_true",
                        help="10 small JPEGs, 32 px, 0 workers, one round of one epoch (seconds)")  # fmt: skip
    args = parser.parse_args(argv)
    jpeg = (1024, 768)
    if args.smoke:
        args.images, args.size, args.batch_size, args.workers = 10, 32, 4, [0]
        args.rounds, args.epochs, jpeg = 1, 1, (64, 48)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="iqa-bench-") as tmp:
        work = args.dir or Path(tmp)
        start = time.perf_counter()
        root = write_koniq(work / "koniq10k", n_images=args.images, size=jpeg)
        jpeg_kb = np.mean([p.stat().st_size for p in (root / "1024x768").iterdir()]) / 1024
        print(
            f"{args.images} JPEGs {jpeg[0]}x{jpeg[1]} ({jpeg_kb:.0f} KB avg) written in "
            f"{time.perf_counter() - start:.1f} s; input {args.size}px, batch {args.batch_size}; "
            f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, Pillow "
            f"{PIL.__version__} (libjpeg-turbo: {features.check_feature('libjpeg_turbo')})"
        )

        loaders, build = {}, {}
        for workers in args.workers:
            for cached in (False, True):
                dm = KonIQDataModule(
                    root=root,
                    image_size=args.size,
                    batch_size=args.batch_size,
                    num_workers=workers,
                    cache=cached,
                    cache_dir=work / "cache" / f"workers{workers}",
                )
                dm.setup("fit")
                name = ("cached" if cached else "uncached", workers)
                loaders[name] = dm.train_dataloader()
                seconds, count = loader_pass(loaders[name])  # warm-up; fills the cache
                if cached:
                    build[workers] = count / seconds
        paths = [Path(item.path) for item in dm.dataset("train").items]
        n_train = len(paths)

        rates: dict[tuple[str, int], list[float]] = {key: [] for key in loaders}
        rates[("bare PIL", 0)] = []
        for _ in range(args.rounds):
            seconds = sum(bare_pass(paths, args.size) for _ in range(args.epochs))
            rates[("bare PIL", 0)].append(args.epochs * n_train / seconds)
            for key, loader in loaders.items():
                runs = [loader_pass(loader) for _ in range(args.epochs)]
                rates[key].append(sum(c for _, c in runs) / sum(s for s, _ in runs))
        best = {key: max(values) for key, values in rates.items()}
        median = {key: statistics.median(values) for key, values in rates.items()}

    bare = best[("bare PIL", 0)]
    print(f"\n{n_train} training images, {args.rounds} rounds x {args.epochs} epochs")
    print(f"load average {os.getloadavg()[0]:.2f} (other processes skew the median)\n")
    print("| pipeline    | workers | images/s | ms/image | median img/s | vs bare PIL |")
    print("|-------------|---------|----------|----------|--------------|-------------|")
    rows = [("bare PIL", 0)] + sorted(loaders, key=lambda k: (k[1], k[0] == "cached"))
    table = [(kind, w, best[(kind, w)], median[(kind, w)]) for kind, w in rows]
    table += [("cache build", w, rate, rate) for w, rate in build.items()]
    for kind, workers, rate, middle in table:
        print(
            f"| {kind:<11} | {workers:>7} | {rate:>8.1f} | {1e3 / rate:>8.2f} | "
            f"{middle:>12.1f} | {rate / bare:>10.2f}x |"
        )

    results = {}
    print()
    for workers in args.workers:
        speedup = best[("cached", workers)] / best[("uncached", workers)]
        overhead = best[("uncached", workers)] / bare
        results[f"cached/uncached@{workers}"] = speedup
        results[f"uncached/bare@{workers}"] = overhead
        goal = f"  (goal >= 3: {'met' if speedup >= 3 else 'MISSED'})"
        print(f"cached/uncached, {workers} workers: {speedup:6.2f}x{goal}")
        note = f"  (goal >= 0.9: {'met' if overhead >= 0.9 else 'MISSED'})" if not workers else ""
        print(f"uncached/bare PIL, {workers} workers: {overhead:6.2f}x{note}")
    return results


if __name__ == "__main__":
    main()
