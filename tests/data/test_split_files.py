import csv
import logging
from collections import Counter

import pytest

from iqa_lightning.data import (
    AGIQA3KDataModule,
    AnnotationError,
    KADIDDataModule,
    KonIQDataModule,
    SplitError,
)

from .fixtures import koniq_set_of, write_agiqa, write_kadid, write_koniq
from .fixtures_files import leaky_split_of, write_split_csv
from .fixtures_more import write_pyiqa_kadid


def make(cls, root, **kwargs):
    kwargs.setdefault("image_size", 16)
    dm = cls(root=root, **kwargs)
    dm.setup("fit")
    return dm


def kadid_with_split_file(tmp_path, **kwargs):
    root = write_kadid(tmp_path / "kadid10k", **kwargs)
    split_file = write_split_csv(root / "dmos.csv", tmp_path / "data" / "split_kadid10k.csv")
    return root, split_file


def rows_of(path):
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def write_rows(path, rows):
    with path.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def test_split_kadid10k_csv_selects_the_split(tmp_path, caplog):
    root, split_file = kadid_with_split_file(tmp_path)
    rows = rows_of(split_file)
    assert rows[0] == ["dist_img", "ref_img", "dmos", "var", "split"]
    assert split_file.read_bytes().count(b"\r") == 0  # pandas' line ends
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        dm = make(KADIDDataModule, root, split="column", split_file=str(split_file))
    expected = {row[0]: row[4] for row in rows[1:]}
    assert dict(dm.split_table()) == expected
    assert Counter(expected.values()) == {"train": 48, "val": 6, "test": 6}
    assert dm.num_records == {"train": 48, "val": 6, "test": 6}
    leak = [r.getMessage() for r in caplog.records if "leaks" in r.getMessage()]
    assert leak and "6 of 10 references" in leak[0]


def test_split_column_defaults_to_split_and_file_name_is_found_in_root(tmp_path):
    root = write_kadid(tmp_path / "kadid10k")
    write_split_csv(root / "dmos.csv", root / "split_kadid10k.csv")
    dm = make(KADIDDataModule, root, split="column", split_file="split_kadid10k.csv")
    assert dm.split_column is None and sum(dm.num_records.values()) == 60


def test_split_file_for_the_pyiqa_layout_of_the_same_dataset(tmp_path):
    published, split_file = kadid_with_split_file(tmp_path / "a")
    root = write_pyiqa_kadid(tmp_path / "b" / "kadid10k")
    dm = make(KADIDDataModule, root, split="column", split_file=str(split_file))
    assert dm.resolved_layout == "pyiqa"
    assert dict(dm.split_table()) == {row[0]: row[4] for row in rows_of(split_file)[1:]}


def test_split_agiqa3k_csv_with_quoted_prompts(tmp_path):
    root = write_agiqa(tmp_path / "AGIQA-3K", n_images=30)
    split_file = write_split_csv(root / "data.csv", tmp_path / "split_agiqa3k.csv")
    rows = rows_of(split_file)
    assert rows[0][-1] == "split" and rows[0][:-1] == rows_of(root / "data.csv")[0]
    assert any("," in row[1] for row in rows[1:])  # prompts with commas stay one cell
    dm = make(AGIQA3KDataModule, root, split="column", split_file=str(split_file))
    assert dict(dm.split_table()) == {row[0]: row[-1] for row in rows[1:]}


def test_split_file_of_koniq_with_the_authors_set_column(tmp_path):
    root = write_koniq(tmp_path / "koniq10k", n_images=30)
    labels = root / "koniq10k_distributions_sets.csv"
    dm = make(KonIQDataModule, root, split="column", split_file=str(labels), split_column="set")
    names = [r.image_id for r in dm.records()]
    phase = {"training": "train", "validation": "val", "test": "test"}
    assert dict(dm.split_table()) == {n: phase[koniq_set_of(i)] for i, n in enumerate(names)}


def test_explicit_image_column(tmp_path):
    root, split_file = kadid_with_split_file(tmp_path)
    rows = rows_of(split_file)
    rows = [["split", "image"]] + [[row[4], row[0]] for row in rows[1:]]
    write_rows(split_file, rows)
    dm = make(
        KADIDDataModule,
        root,
        split="column",
        split_file=str(split_file),
        split_image_column="image",
    )
    assert dict(dm.split_table()) == {row[1]: row[0] for row in rows[1:]}
    with pytest.raises(AnnotationError, match=r"missing required column\(s\) \['name'\]"):
        make(
            KADIDDataModule,
            root,
            split="column",
            split_file=str(split_file),
            split_image_column="name",
        )


def test_images_missing_from_the_split_file_are_counted_and_named(tmp_path):
    root, split_file = kadid_with_split_file(tmp_path)
    rows = rows_of(split_file)
    write_rows(split_file, rows[:1] + rows[8:])
    with pytest.raises(SplitError) as info:
        make(KADIDDataModule, root, split="column", split_file=str(split_file))
    message = str(info.value)
    assert str(split_file) in message and "7 of the 60 images of kadid are not in it" in message
    assert "'I01_01_01.png'" in message and "(2 more)" in message


def test_names_in_the_split_file_that_are_not_in_the_dataset(tmp_path):
    root, split_file = kadid_with_split_file(tmp_path)
    rows = rows_of(split_file)
    extra = [["I99_01_01.png", "I99.png", "3.0", "0.2", "train"]]
    write_rows(split_file, rows + extra)
    with pytest.raises(SplitError, match=r"1 of its 61 names \(column 'dist_img'\).*I99_01_01"):
        make(KADIDDataModule, root, split="column", split_file=str(split_file))


def test_unknown_split_value_names_file_line_and_column(tmp_path):
    root, split_file = kadid_with_split_file(tmp_path)
    rows = rows_of(split_file)
    rows[4][4] = "holdout"
    write_rows(split_file, rows)
    with pytest.raises(SplitError) as info:
        make(KADIDDataModule, root, split="column", split_file=str(split_file))
    assert f"{split_file}, line 5, column 'split': split 'holdout'" in str(info.value)


def test_split_names_are_case_insensitive_and_accept_long_forms(tmp_path):
    def long_names(position):
        return {"train": "Training", "val": "validation", "test": "TESTING"}[
            leaky_split_of(position)
        ]

    root = write_kadid(tmp_path / "kadid10k")
    split_file = write_split_csv(root / "dmos.csv", tmp_path / "s.csv", split_of=long_names)
    dm = make(KADIDDataModule, root, split="column", split_file=str(split_file))
    assert dm.num_records == {"train": 48, "val": 6, "test": 6}


def test_repeated_name_in_the_split_file(tmp_path):
    root, split_file = kadid_with_split_file(tmp_path)
    rows = rows_of(split_file)
    write_rows(split_file, rows + [rows[3]])
    with pytest.raises(SplitError, match=r"'I01_01_03.png' .* lines 4 and 62"):
        make(KADIDDataModule, root, split="column", split_file=str(split_file))


def test_no_column_holds_the_image_names(tmp_path):
    root, split_file = kadid_with_split_file(tmp_path)
    rows = rows_of(split_file)
    write_rows(split_file, [rows[0]] + [[f"x/{r[0]}", *r[1:]] for r in rows[1:]])
    with pytest.raises(SplitError, match="dataset.split_image_column"):
        make(KADIDDataModule, root, split="column", split_file=str(split_file))


def test_a_split_left_empty_is_an_error(tmp_path):
    root = write_kadid(tmp_path / "kadid10k")
    split_file = write_split_csv(root / "dmos.csv", tmp_path / "s.csv", split_of=lambda i: "train")
    with pytest.raises(SplitError, match="'val' split empty"):
        make(KADIDDataModule, root, split="column", split_file=str(split_file))


def test_missing_split_file_lists_where_it_looked(tmp_path):
    root = write_kadid(tmp_path / "kadid10k")
    with pytest.raises(FileNotFoundError, match=r"dataset\.split_file.*kadid10k/nope\.csv"):
        make(KADIDDataModule, root, split="column", split_file="nope.csv")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"split": "column"}, "needs dataset.split_file"),
        ({"split": "random", "split_file": "s.csv"}, "set dataset.split=column"),
        ({"split": "pyiqa", "split_file": "s.pkl", "split_image_column": "x"}, "applies to"),
    ],
)
def test_split_column_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KADIDDataModule(root="/nonexistent", **kwargs)


def test_skip_mode_drops_bad_images_after_the_split_file(tmp_path):
    root, split_file = kadid_with_split_file(tmp_path)
    (root / "images" / "I01_01_01.png").write_bytes(b"")
    dm = make(
        KADIDDataModule,
        root,
        split="column",
        split_file=str(split_file),
        on_bad_image="skip",
    )
    assert sum(dm.num_records.values()) == 59
    assert "I01_01_01.png" not in dict(dm.split_table())
