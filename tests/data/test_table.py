import csv
import json
import logging
from collections import Counter

import pytest

from iqa_lightning.data import AnnotationError, SplitError, TableDataModule

from .fixtures import write_image, write_kadid
from .fixtures_files import (
    write_deqa_json,
    write_qalign_conversations,
    write_qalign_scores,
    write_split_csv,
)


def make(file, setup=True, **kwargs):
    kwargs.setdefault("image_size", 16)
    dm = TableDataModule(file=str(file), **kwargs)
    if setup:
        dm.setup("fit")
    return dm


def images(folder, names):
    for i, name in enumerate(names):
        write_image(folder / name, seed=i)
    return names


def scored(n, lo=0.2, hi=4.8):
    return [round(lo + (hi - lo) * i / (n - 1), 6) for i in range(n)]


def write_table(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_qalign_score_list_with_text_scores_loads_without_keys(tmp_path, caplog):
    names = images(tmp_path, [f"agiqa3k/AttnGAN_normal_{i:03d}.jpg" for i in range(20)])
    file = write_qalign_scores(tmp_path / "agi.json", names, scored(20), as_text=True)
    assert file.read_text().startswith('[{"img_path": "agiqa3k/AttnGAN_normal_000.jpg", "gt_')
    with caplog.at_level(logging.INFO, logger="iqa_lightning.data"):
        dm = make(file)
    assert dm.root == tmp_path and dm.split == "random"
    records = dm.records()
    assert records[0].image_id == "agiqa3k/AttnGAN_normal_000.jpg"
    assert records[0].path == tmp_path / "agiqa3k" / "AttnGAN_normal_000.jpg"
    assert dm.mos_range == (0.2, 4.8)
    assert dm.to_target(0.2) == 0.0 and dm.to_target(4.8) == 1.0
    assert Counter(s for _, s in dm.split_table()) == {"train": 14, "val": 2, "test": 4}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "image from 'img_path', score from 'gt_score'" in messages
    assert "dataset.mos_range inferred from the data: [0.2, 4.8]" in messages
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixels"].shape[1:] == (3, 16, 16)


def test_qalign_image_key_score_list(tmp_path):
    names = images(tmp_path / "data", [f"csiq/dst_imgs/awgn/1600.AWGN.{i}.png" for i in range(10)])
    file = write_qalign_scores(tmp_path / "data" / "csiq.json", names, scored(10, 0, 1), "image")
    dm = make(file, mos_range=[0, 1], higher_better=False)
    assert dm.mos_range == (0.0, 1.0) and dm.to_target(0.0) == 1.0
    assert [r.mos_raw for r in dm.records()] == scored(10, 0, 1)


def test_qalign_conversation_file_with_gt_score(tmp_path):
    names = images(tmp_path, [f"koniq/{10004473376 + i}.jpg" for i in range(20)])
    file = write_qalign_conversations(
        tmp_path / "test_koniq.json", names, scored(20, 5, 90), (1, 100)
    )
    record = json.loads(file.read_text())[0]
    assert record["conversations"][0]["value"].endswith("\n<|image|>")
    dm = make(file, mos_range=[1, 100])
    assert [r.mos_raw for r in dm.records()] == scored(20, 5, 90)


def test_qalign_training_file_scores_come_from_the_id(tmp_path, caplog):
    names = images(tmp_path, [f"kadid10k/I{i:02d}_01_01.png" for i in range(1, 21)])
    scores = scored(20, 1.2, 4.6)
    file = write_qalign_conversations(
        tmp_path / "train_kadid.json", names, scores, (1, 5), with_score=False
    )
    assert "gt_score" not in json.loads(file.read_text())[0]
    with caplog.at_level(logging.INFO, logger="iqa_lightning.data"):
        dm = make(file, mos_range=[1, 5])
    assert [r.mos_raw for r in dm.records()] == scores
    assert any("Q-Align's id" in r.getMessage() for r in caplog.records)


def test_levels_from_answer_reads_each_records_level_word(tmp_path):
    """``levels_from=answer``: the level losses read the level word the file's authors wrote in
    each answer, not the score binned (where the two disagree, the answer wins); a record whose
    answer ends with another word is an error naming the record and the word."""
    import torch

    from iqa_lightning.models.levels import LevelTargets

    names = images(tmp_path, [f"koniq/{10004473376 + i}.jpg" for i in range(20)])
    scores = scored(20, 5, 90)
    file = write_qalign_conversations(
        tmp_path / "train_koniq.json", names, scores, (1, 100), with_score=False
    )
    records = json.loads(file.read_text())
    words = [r["conversations"][-1]["value"].split()[-1].rstrip(".") for r in records]
    records[3]["conversations"][-1]["value"] = "The quality of the image is excellent."
    words[3] = "excellent"  # a label the bins would not give this score
    file.write_text(json.dumps(records))
    levels = ["excellent", "good", "fair", "poor", "bad"]
    dm = make(file, mos_range=[1, 100], levels_from="answer", batch_size=20, split="random")
    by_id = {r.image_id: r.level for r in dm.records()}
    assert [by_id[n] for n in names] == [levels.index(w) for w in words]
    batch = next(iter(dm.test_dataloader()))
    assert batch["target_level"].dtype == torch.long
    targets = LevelTargets(range="declared")
    assert targets.levels_of(batch).tolist() == [by_id[i] for i in batch["image_id"]]
    binned = targets.levels_of({"target": batch["target"]})  # without it: the score binned
    assert targets.level_index(batch["target"]).tolist() == binned.tolist()
    assert make(file, mos_range=[1, 100], setup=False).levels_from is None  # off by default

    records[7]["conversations"][-1]["value"] = "The quality of the image is average."
    file.write_text(json.dumps(records))
    with pytest.raises(
        AnnotationError,
        match=r"record 7: dataset.levels_from=answer, but its "
        r"answer 'The quality of the image is average.' ends with 'average'",
    ):
        make(file, mos_range=[1, 100], levels_from="answer")
    with pytest.raises(ValueError, match="levels_from=answer reads the answers of a JSON"):
        make(tmp_path / "scores.csv", setup=False, levels_from="answer")
    with pytest.raises(ValueError, match="dataset.levels_from='words' must be one of"):
        make(file, setup=False, levels_from="words")


def test_deqa_score_file_keeps_the_std(tmp_path):
    names = images(tmp_path, [f"KONIQ/images/{i}.jpg" for i in range(20)])
    stds = [0.5 + i / 100 for i in range(20)]
    file = write_deqa_json(
        tmp_path / "train_koniq_7k.json", names, scored(20, 3, 95), stds, (1, 100)
    )
    dm = make(file, mos_range=[1, 100])
    assert [r.mos_std for r in dm.records()] == stds


def test_csv_with_custom_column_names(tmp_path):
    names = images(tmp_path / "pics", [f"shot {i}.png" for i in range(20)])
    rows = [[n, f"{s:.3f}", "x"] for n, s in zip(names, scored(20, 10, 90), strict=True)]
    file = write_table(tmp_path / "pics" / "labels.csv", ["picture", "quality", "note"], rows)
    with pytest.raises(AnnotationError) as info:
        make(file)
    message = str(info.value)
    assert str(file) in message and "dataset.image_key" in message and "'picture'" in message
    dm = make(file, image_key="picture", score_key="quality", mos_range=[0, 100])
    assert dm.records()[3].path == tmp_path / "pics" / "shot 3.png"
    assert dm.records()[3].mos_std is None


def test_split_column_selects_the_official_split(tmp_path):
    root = write_kadid(tmp_path / "kadid10k")
    file = write_split_csv(root / "dmos.csv", root / "split_kadid10k.csv")
    dm = make(file, root=str(root / "images"), mos_range=[1, 5])
    assert dm.split == "official"
    expected = {row["dist_img"]: row["split"] for row in csv.DictReader(file.open())}
    assert dict(dm.split_table()) == expected
    assert dm.num_records == {"train": 48, "val": 6, "test": 6}
    random = make(file, root=str(root / "images"), split="random", split_key=None)
    assert random.split == "random" and random.num_records == {"train": 42, "val": 6, "test": 12}


def test_split_names_long_forms_and_reference_key(tmp_path):
    names = images(tmp_path, [f"r{i % 5}_d{i}.png" for i in range(30)])
    long = ("training", "validation", "testing")
    rows = [
        [n, f"{1 + i / 10:.2f}", f"r{i % 5}.png", long[0 if i < 20 else 1 if i < 25 else 2]]
        for i, n in enumerate(names)
    ]
    file = write_table(tmp_path / "t.csv", ["image", "mos", "ref", "split"], rows)
    dm = make(file)
    assert dm.num_records == {"train": 20, "val": 5, "test": 5}
    by_ref = make(file, ref_key="ref", split_key=None)
    assert by_ref.split == "reference_disjoint"
    refs = {}
    for image_id, split in by_ref.split_table():
        refs.setdefault(image_id.split("_")[0], set()).add(split)
    assert all(len(s) == 1 for s in refs.values())


def test_seeded_random_split_without_a_split_column(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(30)])
    file = write_qalign_scores(tmp_path / "s.json", names, scored(30))
    a, b, c = make(file, seed=1), make(file, seed=1), make(file, seed=2)
    assert a.split_table() == b.split_table() != c.split_table()


def test_explicit_mos_range_is_checked_and_higher_is_better_alias(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(10)])
    file = write_qalign_scores(tmp_path / "s.json", names, scored(10, 0, 9))
    with pytest.raises(AnnotationError, match=r"outside dataset\.mos_range \[0, 5\]"):
        make(file, mos_range=[0, 5])
    flipped = make(file, mos_range=[0, 9], higher_is_better=False)
    assert not flipped.higher_better and flipped.to_target(9.0) == 0.0


@pytest.mark.parametrize(
    "value,match",
    [
        ("", "record 3, column 'gt_score': value is empty"),
        ("n/a", "record 3, column 'gt_score': 'n/a' is not a number"),
        (float("nan"), "record 3, column 'gt_score': nan is not a finite number"),
        (None, "record 3, column 'gt_score': value is empty"),
        (True, "record 3, column 'gt_score': True is not a finite number"),
    ],
)
def test_bad_json_score_names_file_record_and_key(tmp_path, value, match):
    names = images(tmp_path, [f"{i}.png" for i in range(6)])
    file = write_qalign_scores(tmp_path / "s.json", names, scored(6))
    records = json.loads(file.read_text())
    records[3]["gt_score"] = value
    file.write_text(json.dumps(records))
    with pytest.raises(AnnotationError, match=match) as info:
        make(file)
    assert str(file) in str(info.value)


def test_json_record_without_the_key_and_with_two_images(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(6)])
    file = write_qalign_scores(tmp_path / "s.json", names, scored(6))
    records = json.loads(file.read_text())
    del records[2]["gt_score"]
    file.write_text(json.dumps(records))
    with pytest.raises(AnnotationError, match=r"record 2: has no 'gt_score'"):
        make(file)
    records[2] = {"img_path": ["0.png", "1.png"], "gt_score": 3.0}
    file.write_text(json.dumps(records))
    with pytest.raises(AnnotationError, match=r"record 2, key 'img_path': holds 2 image paths"):
        make(file)


def test_bad_csv_cells_name_file_line_and_column(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(6)])
    rows = [[n, f"{s}"] for n, s in zip(names, scored(6), strict=True)]
    rows[4][1] = "NaN"
    file = write_table(tmp_path / "t.csv", ["image_name", "MOS"], rows)
    with pytest.raises(AnnotationError, match=r"t\.csv, line 6, column 'MOS': 'NaN'"):
        make(file)


def test_duplicate_image_is_named_with_both_rows(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(6)])
    file = write_qalign_scores(tmp_path / "s.json", [*names, names[1]], scored(7))
    with pytest.raises(AnnotationError, match=r"duplicate img_path '1.png' on records 1 and 6"):
        make(file)
    rows = [[n, "3"] for n in [*names, names[2]]]
    csv_file = write_table(tmp_path / "t.csv", ["name", "score"], rows)
    with pytest.raises(AnnotationError, match=r"duplicate name '2.png' on lines 4 and 8"):
        make(csv_file)


def test_unknown_split_value_and_missing_key(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(6)])
    rows = [[n, "3.5", "train"] for n in names]
    rows[1][2] = "holdout"
    file = write_table(tmp_path / "t.csv", ["image", "mos", "split"], rows)
    with pytest.raises(AnnotationError, match=r"line 3, key 'split': split 'holdout'"):
        make(file, mos_range=[1, 5])
    with pytest.raises(AnnotationError, match=r"no column / key 'quality' \(dataset\.score_key\)"):
        make(file, score_key="quality")


def test_constant_scores_need_a_mos_range(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(6)])
    file = write_qalign_scores(tmp_path / "s.json", names, [3.0] * 6)
    with pytest.raises(AnnotationError, match=r"are 3, so no score range.*dataset\.mos_range"):
        make(file)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match=r"dataset\.file must name"):
        TableDataModule(file=None)
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        TableDataModule(file=str(tmp_path / "labels.txt"))
    with pytest.raises(FileNotFoundError, match=r"dataset\.file .*missing\.json' does not exist"):
        make(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"img_path": "a.png"}')
    with pytest.raises(AnnotationError, match="expected a JSON list of records, got dict"):
        make(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(AnnotationError, match="invalid JSON at line 1"):
        make(tmp_path / "broken.json")


def test_missing_images_under_the_root_are_reported(tmp_path):
    names = images(tmp_path / "elsewhere", [f"{i}.png" for i in range(6)])
    file = write_qalign_scores(tmp_path / "s.json", names, scored(6))
    with pytest.raises(FileNotFoundError, match="6 of 6 image file"):
        make(file)
    assert sum(make(file, root=str(tmp_path / "elsewhere")).num_records.values()) == 6


def test_split_file_works_with_tables_too(tmp_path):
    names = images(tmp_path, [f"{i}.png" for i in range(20)])
    file = write_qalign_scores(tmp_path / "s.json", names, scored(20))
    split_rows = [[n, ("train", "val", "test")[i % 3]] for i, n in enumerate(names)]
    split_file = write_table(tmp_path / "split.csv", ["img_path", "split"], split_rows)
    dm = make(file, split="column", split_file=str(split_file))
    assert dict(dm.split_table()) == {n: s for n, s in split_rows}
    with pytest.raises(SplitError, match="not in it"):
        write_table(tmp_path / "split.csv", ["img_path", "split"], split_rows[1:])
        make(file, split="column", split_file=str(split_file))
