import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from iqa_lightning.data import ImageRecord, SplitError, assign_splits, check_ratios


def with_refs(n_refs=10, per_ref=5):
    return [
        ImageRecord(f"I{r:02d}_{k:02d}.png", Path(f"I{r:02d}_{k:02d}.png"), 3.0, ref_id=f"I{r:02d}")
        for r in range(n_refs)
        for k in range(per_ref)
    ]


def no_refs(n=100):
    return [ImageRecord(f"{i}.jpg", Path(f"{i}.jpg"), 3.0) for i in range(n)]


def refs_per_split(records, assignment):
    split_of_ref: dict[str, set[str]] = {}
    for r in records:
        split_of_ref.setdefault(r.ref_id, set()).add(assignment[r.image_id])
    return split_of_ref


def test_reference_disjoint_keeps_each_reference_in_one_split():
    records = with_refs(10, 5)
    assignment = assign_splits(records, "reference_disjoint", (0.7, 0.1, 0.2), seed=3)
    assert set(assignment) == {r.image_id for r in records}
    per_ref = refs_per_split(records, assignment)
    assert all(len(splits) == 1 for splits in per_ref.values())
    ref_counts = Counter(next(iter(s)) for s in per_ref.values())
    assert ref_counts == {"train": 7, "val": 1, "test": 2}
    assert Counter(assignment.values()) == {"train": 35, "val": 5, "test": 10}


def test_seeded_and_independent_of_record_order():
    records = with_refs(20, 3)
    a = assign_splits(records, "reference_disjoint", seed=1)
    b = assign_splits(list(reversed(records)), "reference_disjoint", seed=1)
    c = assign_splits(records, "reference_disjoint", seed=2)
    assert a == b
    assert a != c


def test_random_split_sizes_and_seed():
    records = no_refs(100)
    a = assign_splits(records, "random", (0.7, 0.1, 0.2), seed=0)
    assert Counter(a.values()) == {"train": 70, "val": 10, "test": 20}
    assert a == assign_splits(records, "random", (0.7, 0.1, 0.2), seed=0)
    assert a != assign_splits(records, "random", (0.7, 0.1, 0.2), seed=1)


def test_random_refuses_reference_datasets():
    with pytest.raises(SplitError) as info:
        assign_splits(with_refs(), "random")
    message = str(info.value)
    assert "reference_disjoint" in message and "per_image_leaky" in message


def test_per_image_leaky_warns_and_leaks(caplog):
    records = with_refs(10, 10)
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        assignment = assign_splits(records, "per_image_leaky", seed=0)
    assert any("leak" in rec.getMessage() for rec in caplog.records)
    assert any(rec.name == "iqa_lightning.data" for rec in caplog.records)
    assert Counter(assignment.values()) == {"train": 70, "val": 10, "test": 20}
    assert any(len(s) > 1 for s in refs_per_split(records, assignment).values())


def test_reference_disjoint_needs_references():
    with pytest.raises(SplitError, match="dataset.split=random"):
        assign_splits(no_refs(10), "reference_disjoint")


def test_official_maps_dataset_names():
    names = ["training", "validation", "test", "train", "val", "Testing"]
    records = [
        ImageRecord(f"{i}.jpg", Path("x"), 1.0, official_split=n) for i, n in enumerate(names)
    ]
    assignment = assign_splits(records, "official")
    assert list(assignment.values()) == ["train", "val", "test", "train", "val", "test"]


def test_official_without_split_column_suggests_random():
    with pytest.raises(SplitError, match="has no official split.*dataset.split=random"):
        assign_splits(no_refs(5), "official")


def test_official_unknown_name():
    records = [ImageRecord("a.jpg", Path("a.jpg"), 1.0, official_split="holdout")]
    with pytest.raises(SplitError, match="'holdout'"):
        assign_splits(records, "official")


def test_official_empty_split():
    records = [ImageRecord(f"{i}.jpg", Path("x"), 1.0, official_split="training") for i in range(3)]
    with pytest.raises(SplitError, match="'val' split empty"):
        assign_splits(records, "official")


def test_empty_split_is_an_error_naming_it():
    with pytest.raises(SplitError) as info:
        assign_splits(with_refs(2, 5), "reference_disjoint")
    message = str(info.value)
    assert "split empty" in message and "dataset.split_ratios" in message


def test_zero_ratio_gives_empty_split_error():
    with pytest.raises(SplitError, match="'val' split empty"):
        assign_splits(no_refs(50), "random", (0.8, 0.0, 0.2))


def test_small_sets_give_every_split_something():
    assignment = assign_splits(with_refs(4, 2), "reference_disjoint", (0.7, 0.1, 0.2))
    assert set(assignment.values()) == {"train", "val", "test"}


@pytest.mark.parametrize(
    "ratios", [(0.7, 0.2, 0.2), (0.5, 0.5), (1.2, -0.1, -0.1), ("a", 0.5, 0.5), None]
)
def test_bad_ratios_name_the_config_key(ratios):
    with pytest.raises(SplitError, match=r"dataset\.split_ratios"):
        check_ratios(ratios)


def test_unknown_strategy():
    with pytest.raises(SplitError, match=r"dataset\.split must be one of"):
        assign_splits(no_refs(), "stratified")


def with_pyiqa(records, phase_of):
    return [replace(r, source_split=phase_of(i, r)) for i, r in enumerate(records)]


def test_pyiqa_three_part_split_is_used_as_is():
    names = ["train", "validation", "test", "training", "val", "Test"]
    records = with_pyiqa(no_refs(6), lambda i, r: names[i])
    assignment = assign_splits(records, "pyiqa")
    assert list(assignment.values()) == ["train", "val", "test", "train", "val", "test"]


def test_pyiqa_two_part_split_by_reference(caplog):
    # pyiqa's LIVE/CSIQ/TID pickles: 8 references train, 2 held out as 'val', no 'test'.
    records = with_pyiqa(
        with_refs(10, 5), lambda i, r: "val" if r.ref_id in {"I03", "I07"} else "train"
    )
    with caplog.at_level(logging.INFO, logger="iqa_lightning.data"):
        assignment = assign_splits(records, "pyiqa", (0.7, 0.1, 0.2), seed=1)
    assert {r.ref_id for r in records if assignment[r.image_id] == "test"} == {"I03", "I07"}
    per_ref = refs_per_split(records, assignment)
    assert all(len(s) == 1 for s in per_ref.values())
    assert Counter(next(iter(s)) for s in per_ref.values()) == {"train": 7, "val": 1, "test": 2}
    assert any("used as test" in rec.getMessage() for rec in caplog.records)
    assert assignment == assign_splits(list(reversed(records)), "pyiqa", (0.7, 0.1, 0.2), seed=1)
    assert assignment != assign_splits(records, "pyiqa", (0.7, 0.1, 0.2), seed=2)


def test_pyiqa_two_part_split_per_image_with_test_part():
    records = with_pyiqa(no_refs(50), lambda i, r: "test" if i % 5 == 0 else "train")
    assignment = assign_splits(records, "pyiqa", (0.7, 0.1, 0.2), seed=0)
    assert Counter(assignment.values()) == {"train": 35, "val": 5, "test": 10}
    assert all(assignment[f"{i}.jpg"] == "test" for i in range(0, 50, 5))


def test_pyiqa_errors():
    with pytest.raises(SplitError, match="has no pyiqa split; set dataset.split_column"):
        assign_splits(no_refs(5), "pyiqa")
    with pytest.raises(SplitError, match="unknown pyiqa split 'holdout'"):
        assign_splits(with_pyiqa(no_refs(5), lambda i, r: "holdout"), "pyiqa")
    two_part = with_pyiqa(no_refs(20), lambda i, r: "val" if i < 4 else "train")
    with pytest.raises(SplitError, match="'val' split empty.*dataset.split_column"):
        assign_splits(two_part, "pyiqa", (0.8, 0.0, 0.2))
    with pytest.raises(SplitError, match="'train' split empty"):
        assign_splits(with_pyiqa(no_refs(5), lambda i, r: "test"), "pyiqa")
