"""One conformance suite over every data module, each on a fixture in its published format.

What every dataset must do the same way: build from its spec's defaults, set up, count its
images, give targets in [0, 1] that follow the declared direction (a higher raw score gives a
higher target, unless the spec says DMOS), keep raw scores inside the declared range, assign
every image to exactly one of train / val / test (references in one split where the default
split is reference-disjoint), and batch the documented keys, dtypes and shapes (a video's ``pixels`` are its sampled frames,
``[B, frames, 3, S, S]``; the fixtures' clips all give the same count). Dataset-specific
behaviour is tested in each dataset's own module.
"""

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import iqa_lightning.data as data
from iqa_lightning.data import (
    SPLIT_NAMES,
    AGIQA3KDataModule,
    AVADataModule,
    CLIVEDataModule,
    CSIQDataModule,
    DatasetSpec,
    IQADataModule,
    KADIDDataModule,
    KonIQDataModule,
    KoNViDDataModule,
    LearningDataModule,
    LIVEDataModule,
    LSVQDataModule,
    PIPALDataModule,
    SPAQDataModule,
    SyntheticDataModule,
    TableDataModule,
    TID2013DataModule,
    VideoDataModule,
)

from .fixtures import write_agiqa, write_image, write_kadid, write_koniq
from .fixtures_files import write_qalign_scores
from .fixtures_more import (
    write_clive,
    write_csiq,
    write_live,
    write_pipal,
    write_spaq,
    write_tid2013,
)
from .test_ava import write_ava
from .test_video_datasets import FRAMES, write_konvid, write_lsvq

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
IMAGE_SIZE = 16
BATCH_KEYS = {"pixels", "target", "mos_raw", "image_id"}
#: Keys a batch has where the dataset gives them: the rating std (KonIQ-10k, KADID-10k, tables
#: with a std column).
OPTIONAL_KEYS = {"target_std"}


def _table(tmp_path: Path) -> dict:
    names = [f"img_{i:02d}.png" for i in range(20)]
    for i, name in enumerate(names):
        write_image(tmp_path / "own" / name, seed=i)
    scores = [1.0 + 4.0 * i / (len(names) - 1) for i in range(len(names))]
    return {"file": str(write_qalign_scores(tmp_path / "own" / "scores.json", names, scores))}


def _synthetic(tmp_path: Path) -> dict:
    return {"cache_dir": tmp_path / "cache", "n_refs": 4, "generated_size": 24, "levels": 2}


def _learning(tmp_path: Path) -> dict:
    return {"root": tmp_path / "learning", "train_images": 6, "val_images": 4, "test_images": 4,
            "generated_size": 24}  # fmt: skip


def _root(writer):
    return lambda tmp_path: {"root": writer(tmp_path / "data")}


#: Every data module, with the arguments that point it at a fixture in its published format.
CASES = {
    AGIQA3KDataModule: _root(write_agiqa),
    AVADataModule: _root(write_ava),
    CLIVEDataModule: _root(write_clive),
    CSIQDataModule: _root(write_csiq),
    KADIDDataModule: _root(write_kadid),
    KonIQDataModule: _root(write_koniq),
    KoNViDDataModule: _root(write_konvid),
    LIVEDataModule: _root(write_live),
    LSVQDataModule: _root(write_lsvq),
    PIPALDataModule: _root(write_pipal),
    SPAQDataModule: _root(write_spaq),
    TID2013DataModule: _root(write_tid2013),
    SyntheticDataModule: _synthetic,
    TableDataModule: _table,
    LearningDataModule: _learning,
}
#: Modules whose score range / split come from the data rather than only from the spec.
DATA_DRIVEN = {TableDataModule}
#: The DMOS datasets: a higher raw score is worse.
DMOS = {CSIQDataModule, LIVEDataModule}


def _exported_modules() -> set[type]:
    return {
        obj
        for obj in vars(data).values()
        if inspect.isclass(obj) and issubclass(obj, IQADataModule) and not inspect.isabstract(obj)
    }


def test_every_data_module_is_in_the_suite_and_declares_its_spec():
    assert _exported_modules() == set(CASES)
    names = [cls.spec.name for cls in CASES]
    assert len(set(names)) == len(names)
    for cls in CASES:
        assert "spec" in vars(cls), f"{cls.__name__} must declare its own spec"
        assert isinstance(cls.spec, DatasetSpec)


#: Options that compose other options rather than read a dataset (tests/test_mix.py covers them).
COMPOSITES = {"mix_datasets"}


def test_every_dataset_config_targets_a_module_of_the_suite():
    targets = {
        OmegaConf.load(path)._target_.rsplit(".", 1)[1]
        for path in CONF.glob("*.yaml")
        if not path.name.startswith("_")
    }
    assert COMPOSITES <= targets
    assert targets - COMPOSITES == {cls.__name__ for cls in CASES}


def test_spec_is_frozen_and_checked():
    spec = KADIDDataModule.spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="lo < hi"):
        DatasetSpec(name="x", mos_range=(5.0, 1.0))
    with pytest.raises(ValueError, match="pyiqa_kind"):
        DatasetSpec(name="x", pyiqa_kind="xx")


@pytest.mark.parametrize(
    "cls", [c for c in CASES if c not in DATA_DRIVEN], ids=lambda c: c.__name__
)
def test_defaults_come_from_the_spec_and_arguments_win(cls, tmp_path):
    kwargs = CASES[cls](tmp_path)
    dm = cls(**kwargs)
    spec = cls.spec
    assert dm.name == spec.name and dm.split == spec.split
    assert dm.mos_range == spec.mos_range and dm.higher_better is spec.higher_better
    assert spec.higher_better is (cls not in DMOS)
    other = cls(**kwargs, name="renamed", mos_range=(-1, 1), higher_better=not spec.higher_better)
    assert other.name == "renamed" and other.mos_range == (-1.0, 1.0)
    assert other.higher_better is not spec.higher_better


@pytest.fixture(params=list(CASES), ids=lambda c: c.__name__)
def module(request, tmp_path):
    cls = request.param
    dm = cls(**CASES[cls](tmp_path), image_size=IMAGE_SIZE, batch_size=3, num_workers=0)
    counts = dm.prepare_records()
    return dm, counts


def test_setup_counts_every_image_once(module):
    dm, counts = module
    records = dm.records()
    assert set(counts) == set(SPLIT_NAMES) and all(counts[s] > 0 for s in SPLIT_NAMES)
    assert sum(counts.values()) == len(records) == len({r.image_id for r in records})
    assert counts == {s: len(dm.records(s)) for s in SPLIT_NAMES}
    assert all(Path(r.path).is_file() for r in records)


def test_splits_are_named_and_disjoint(module):
    dm, _ = module
    table = dm.split_table()
    assert {split for _, split in table} <= set(SPLIT_NAMES)
    parts = {s: {r.image_id for r in dm.records(s)} for s in SPLIT_NAMES}
    assert sum(map(len, parts.values())) == len(set().union(*parts.values())) == len(table)
    if dm.split == "reference_disjoint":
        refs = {s: {r.ref_id for r in dm.records(s)} for s in SPLIT_NAMES}
        assert None not in set().union(*refs.values())
        assert not (refs["train"] & refs["val"] or refs["train"] & refs["test"])
        assert not refs["val"] & refs["test"]


def test_scores_in_range_and_targets_follow_the_direction(module):
    dm, _ = module
    lo, hi = dm.mos_range
    if type(dm) not in DATA_DRIVEN:
        assert (lo, hi) == type(dm).spec.mos_range
    records = dm.records()
    assert all(lo <= r.mos_raw <= hi for r in records)
    assert len({r.mos_raw for r in records}) > 1
    pairs = sorted((r.mos_raw, dm.to_target(r.mos_raw)) for r in records)
    targets = [t for _, t in pairs]
    assert all(0.0 <= t <= 1.0 for t in targets)
    step = 1 if dm.higher_better else -1
    assert all(step * (b - a) >= 0 for a, b in zip(targets, targets[1:], strict=False))
    assert step * (targets[-1] - targets[0]) > 0
    assert dm.to_target(lo) == (0.0 if dm.higher_better else 1.0)
    assert dm.to_target(hi) == (1.0 if dm.higher_better else 0.0)


@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_batches_have_the_documented_keys_dtypes_and_shapes(module, split):
    dm, counts = module
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}
    batch = next(iter(loader[split]()))
    size = min(3, counts[split])
    assert BATCH_KEYS <= set(batch) <= BATCH_KEYS | OPTIONAL_KEYS
    assert ("target_std" in batch) == dm.has_std()
    if "target_std" in batch:
        assert batch["target_std"].shape == (size,) and batch["target_std"].dtype == torch.float32
        assert float(batch["target_std"].min()) > 0.0
    frames = (FRAMES,) if isinstance(dm, VideoDataModule) else ()
    assert batch["pixels"].shape == (size, *frames, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["pixels"].dtype == torch.float32
    assert 0.0 <= float(batch["pixels"].min()) and float(batch["pixels"].max()) <= 1.0
    for key in ("target", "mos_raw"):
        assert batch[key].shape == (size,) and batch[key].dtype == torch.float32
    assert 0.0 <= float(batch["target"].min()) and float(batch["target"].max()) <= 1.0
    assert isinstance(batch["image_id"], list) and len(batch["image_id"]) == size
    assert all(isinstance(i, str) for i in batch["image_id"])
    expected = torch.tensor([dm.to_target(float(m)) for m in batch["mos_raw"]])
    assert torch.allclose(batch["target"], expected, atol=1e-6)
    if split != "train":
        ids = {r.image_id for r in dm.records(split)}
        assert set(batch["image_id"]) <= ids
