import csv
import multiprocessing
import re
from collections import defaultdict

import numpy as np
import pytest

from iqa_lightning.data import (
    KADIDDataModule,
    SyntheticDataModule,
    generate_synthetic_kadid,
    load_rgb,
    synthetic_dirname,
)
from iqa_lightning.data.datasets.synthetic import DISTORTIONS, MARKER

SMALL = {"n_refs": 3, "image_size": 32, "levels": 3, "seed": 0}
N_TYPES = len(DISTORTIONS)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate_synthetic_kadid(tmp_path_factory.mktemp("synth") / "set", **SMALL)


def read_rows(root):
    with (root / "dmos.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout(small_set):
    assert (small_set / MARKER).is_file()
    with (small_set / "dmos.csv").open(newline="") as handle:
        assert next(csv.reader(handle)) == ["dist_img", "ref_img", "dmos", "var"]
    rows = read_rows(small_set)
    assert N_TYPES >= 7 and len(rows) == 3 * N_TYPES * 3
    files = sorted(p.name for p in (small_set / "images").iterdir())
    assert [f for f in files if re.fullmatch(r"I\d\d\.png", f)] == ["I01.png", "I02.png", "I03.png"]
    assert len(files) == 3 + len(rows)
    for row in rows:
        assert re.fullmatch(r"I0[1-3]_\d\d_0[1-3]\.png", row["dist_img"])
        assert row["ref_img"] == row["dist_img"][:3] + ".png"
        assert 1.0 <= float(row["dmos"]) <= 5.0 and float(row["var"]) > 0
    image = load_rgb(small_set / "images" / "I02_01_01.png")  # camera: grayscale -> RGB
    assert image.mode == "RGB" and image.size == (32, 32)


def test_scores_fall_with_level(small_set):
    scores = defaultdict(dict)
    for row in read_rows(small_set):
        ref, kind, level = row["dist_img"][:-4].split("_")
        scores[(ref, kind)][int(level)] = float(row["dmos"])
    per_level = [np.mean([s[level] for s in scores.values()]) for level in (1, 2, 3)]
    assert per_level[0] > per_level[1] > per_level[2]
    ordered = sum(s[1] > s[3] for s in scores.values())
    assert ordered >= 0.85 * len(scores)
    all_scores = [v for s in scores.values() for v in s.values()]
    assert max(all_scores) - min(all_scores) > 2.5  # uses most of the 1-5 scale


def test_deterministic(small_set, tmp_path):
    again = generate_synthetic_kadid(tmp_path / "again", **SMALL)
    assert (again / "dmos.csv").read_bytes() == (small_set / "dmos.csv").read_bytes()
    for name in ("I01.png", "I01_02_03.png", "I03_03_01.png"):
        assert (again / "images" / name).read_bytes() == (small_set / "images" / name).read_bytes()
    other = generate_synthetic_kadid(tmp_path / "other", **{**SMALL, "seed": 1})
    assert (other / "dmos.csv").read_bytes() != (small_set / "dmos.csv").read_bytes()


def test_existing_set_is_reused_and_conflicts_refused(small_set, tmp_path):
    stamp = (small_set / "dmos.csv").stat().st_mtime_ns
    assert generate_synthetic_kadid(small_set, **SMALL) == small_set
    assert (small_set / "dmos.csv").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="generated with"):
        generate_synthetic_kadid(small_set, **{**SMALL, "levels": 2})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=MARKER):
        generate_synthetic_kadid(foreign, **SMALL)


def _generate(path):
    return str(generate_synthetic_kadid(path, n_refs=2, image_size=16, levels=2, seed=0))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_generation_is_safe(tmp_path):
    target = tmp_path / "cache" / "set"
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        results = pool.map(_generate, [target] * 3)
    assert results == [str(target)] * 3
    assert len(read_rows(target)) == 2 * N_TYPES * 2
    assert [p.name for p in target.parent.iterdir()] == ["set"]  # no temp folders left


def test_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="n_refs"):
        generate_synthetic_kadid(tmp_path / "x", n_refs=13)
    with pytest.raises(ValueError, match="levels"):
        generate_synthetic_kadid(tmp_path / "x", levels=0)


def test_data_module_generates_into_cache(tmp_path):
    dm = SyntheticDataModule(
        cache_dir=tmp_path / "cache", n_refs=4, generated_size=24, levels=2, image_size=16
    )
    assert isinstance(dm, KADIDDataModule)
    assert dm.root == tmp_path / "cache" / synthetic_dirname(4, 24, 2, 0)
    assert not dm.root.exists()
    dm.setup("fit")
    assert (dm.root / "dmos.csv").is_file()
    assert sum(dm.num_records.values()) == 4 * N_TYPES * 2
    assert all(n > 0 for n in dm.num_records.values())
    refs = {s: {r.ref_id for r in dm.records(s)} for s in ("train", "val", "test")}
    assert not (refs["train"] & refs["test"] or refs["train"] & refs["val"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixels"].shape[1:] == (3, 16, 16)
    assert 0.0 <= batch["target"].min() and batch["target"].max() <= 1.0
    dm.prepare_data()  # cached: no error, no rewrite


def test_dirname_depends_on_parameters():
    names = {
        synthetic_dirname(12, 192, 5, 0),
        synthetic_dirname(11, 192, 5, 0),
        synthetic_dirname(12, 128, 5, 0),
        synthetic_dirname(12, 192, 4, 0),
        synthetic_dirname(12, 192, 5, 1),
    }
    assert len(names) == 5 and all(n.startswith("synthetic_kadid_") for n in names)


def test_losing_the_rename_race_keeps_the_winner(tmp_path, monkeypatch):
    from iqa_lightning.data.datasets import synthetic

    target = tmp_path / "set"
    real_write = synthetic._write_dataset
    calls = []

    def write_while_another_process_finishes(root, params):
        calls.append(root)
        real_write(root, params)
        if len(calls) == 1:  # the other process renames its copy into place first
            generate_synthetic_kadid(target, **SMALL)

    monkeypatch.setattr(synthetic, "_write_dataset", write_while_another_process_finishes)
    assert generate_synthetic_kadid(target, **SMALL) == target
    assert len(calls) == 2
    assert len(read_rows(target)) == 3 * N_TYPES * 3
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


@pytest.mark.slow
def test_default_set_generates_quickly(tmp_path):
    import time

    start = time.perf_counter()
    generate_synthetic_kadid(tmp_path / "default")
    assert time.perf_counter() - start < 30
    assert len(read_rows(tmp_path / "default")) == 12 * N_TYPES * 5
