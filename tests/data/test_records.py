import dataclasses
from pathlib import Path

import pytest

from iqa_lightning.data import AnnotationError, ImageRecord, read_annotation_csv

REQUIRED = ("dist_img", "ref_img", "dmos")


def write(tmp_path, text, name="dmos.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read(path, **kwargs):
    kwargs.setdefault("required", REQUIRED)
    kwargs.setdefault("numeric", ("dmos",))
    kwargs.setdefault("unique", "dist_img")
    return read_annotation_csv(path, **kwargs)


def test_reads_rows_with_line_numbers_and_numbers(tmp_path):
    path = write(
        tmp_path,
        "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.49\n\nI01_01_02.png,I01.png,3.5,0.3\n",
    )
    header, rows = read(path)
    assert header == ["dist_img", "ref_img", "dmos", "var"]
    assert [row.line for row in rows] == [2, 4]  # the blank line is skipped but counted
    assert rows[0]["ref_img"] == "I01.png" and rows[0].numbers["dmos"] == 4.57
    assert rows[1].values["var"] == "0.3"


def test_quoted_commas_and_bom(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(
        '\ufeffname,prompt,mos_quality\na.jpg,"a cat, anime style",1.5\n'.encode("utf-8")
    )
    header, rows = read_annotation_csv(path, ("name", "mos_quality"), ("mos_quality",), "name")
    assert header[0] == "name"
    assert rows[0]["prompt"] == "a cat, anime style"


def test_missing_column_names_file_column_and_found_columns(tmp_path):
    path = write(tmp_path, "dist_img,reference,dmos\nI01_01_01.png,I01.png,4.0\n")
    with pytest.raises(AnnotationError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message
    assert "ref_img" in message
    assert "reference" in message and "dist_img" in message  # the columns found


def test_extra_header_row_in_the_middle(tmp_path):
    path = write(
        tmp_path,
        "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.0,0.1\n"
        "dist_img,ref_img,dmos,var\nI01_01_02.png,I01.png,3.0,0.1\n",
    )
    with pytest.raises(AnnotationError, match="line 3: repeats the header row") as info:
        read(path)
    assert str(path) in str(info.value)


def test_duplicated_header_row_at_the_top(tmp_path):
    path = write(
        tmp_path, "dist_img,ref_img,dmos,var\ndist_img,ref_img,dmos,var\na.png,b.png,4,0\n"
    )
    with pytest.raises(AnnotationError, match="line 2: repeats the header row"):
        read(path)


def test_title_line_above_header_gets_a_hint(tmp_path):
    path = write(tmp_path, "KADID-10k scores\ndist_img,ref_img,dmos,var\na.png,b.png,4,0\n")
    with pytest.raises(AnnotationError, match="line 2") as info:
        read(path)
    assert "missing required column" in str(info.value)


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "abc", "4,5"])
def test_bad_scores_name_file_line_column_and_value(tmp_path, bad):
    cell = f'"{bad}"' if "," in bad else bad
    path = write(
        tmp_path,
        f"dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.0,0.1\nI01_01_02.png,I01.png,{cell},0.1\n",
    )
    with pytest.raises(AnnotationError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "'dmos'" in message
    assert repr(bad) in message


def test_empty_score(tmp_path):
    path = write(tmp_path, "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,,0.1\n")
    with pytest.raises(AnnotationError, match=r"line 2, column 'dmos': value is empty"):
        read(path)


def test_duplicate_image_names_name_both_lines(tmp_path):
    path = write(
        tmp_path,
        "dist_img,ref_img,dmos,var\na.png,r.png,4,0\nb.png,r.png,3,0\na.png,r.png,2,0\n",
    )
    with pytest.raises(AnnotationError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message and "'a.png'" in message and "lines 2 and 4" in message


def test_wrong_number_of_fields(tmp_path):
    path = write(tmp_path, "dist_img,ref_img,dmos,var\na.png,r.png,4,0,extra\n")
    with pytest.raises(AnnotationError, match="line 2: has 5 fields but the header has 4"):
        read(path)


def test_header_only_and_empty_file(tmp_path):
    with pytest.raises(AnnotationError, match="no data rows"):
        read(write(tmp_path, "dist_img,ref_img,dmos,var\n"))
    with pytest.raises(AnnotationError, match="empty"):
        read(write(tmp_path, "", name="empty.csv"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dmos.csv"):
        read(tmp_path / "dmos.csv")


def test_path_with_spaces_and_unicode(tmp_path):
    folder = tmp_path / "my labels" / "数据 ü"
    folder.mkdir(parents=True)
    path = write(folder, "dist_img,ref_img,dmos\nbild ä 1.png,I01.png,4\n", name="dmos file.csv")
    _, rows = read(path)
    assert rows[0]["dist_img"] == "bild ä 1.png"


def test_image_record_is_frozen_and_hashable():
    record = ImageRecord("a.png", Path("/x/a.png"), 3.0, ref_id="r.png")
    assert record.official_split is None
    assert {record: 1}[record] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.mos_raw = 4.0
