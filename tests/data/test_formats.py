import numpy as np
import openpyxl
import pytest
from scipy.io import savemat

from iqa_lightning.data import AnnotationError
from iqa_lightning.data.formats import (
    load_mat,
    mat_strings,
    read_table,
    read_text_columns,
    read_xlsx,
)


def workbook(path, rows, title="Sheet", extra_sheets=()):
    book = openpyxl.Workbook()
    for name in extra_sheets:
        book.create_sheet(name)
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def test_xlsx_header_below_titles_padding_rows_and_integer_names(tmp_path):
    path = workbook(
        tmp_path / "labels.xlsx",
        [
            ["My database"],
            [],
            [None, "image", "score", "note"],
            [None, 1600, 0.5, "x"],
            [None, None, None, None],
            [None, "boston", 1, None],
        ],
    )
    header, rows = read_xlsx(path, ("image", "score"), numeric=("score",), unique="image")
    assert header == ["", "image", "score", "note"]
    assert [(r.line, r["image"], r.numbers["score"]) for r in rows] == [
        (4, "1600", 0.5),
        (6, "boston", 1.0),
    ]
    assert rows[0].values["note"] == "x" and rows[1].values["note"] == ""


def test_xlsx_sheet_by_name(tmp_path):
    path = workbook(tmp_path / "l.xlsx", [["image", "dmos"], ["a", 0.1]], "all_by_image", ["intro"])
    _, rows = read_xlsx(path, ("image", "dmos"), sheet="all_by_image")
    assert rows[0]["image"] == "a"
    with pytest.raises(AnnotationError, match=r"has no sheet 'by_type'; its sheets are \["):
        read_xlsx(path, ("image",), sheet="by_type")


@pytest.mark.parametrize(
    "rows,match",
    [
        ([["name", "MOS"], ["a", "high"]], r"sheet 'Sheet', row 2, column 'MOS': 'high' is not a"),
        ([["name", "MOS"], ["a", None]], r"row 2, column 'MOS': value is empty"),
        ([["name", "MOS"], ["a", 1], ["a", 2]], r"duplicate name 'a' on rows 2 and 3"),
        ([["file", "MOS"], ["a", 1]], r"no row among the first 20 holds .*\['name', 'MOS'\]"),
        ([["name", "MOS"]], "no data rows"),
    ],
)
def test_xlsx_errors_name_file_sheet_row(tmp_path, rows, match):
    path = workbook(tmp_path / "scores.xlsx", rows)
    with pytest.raises(AnnotationError, match=match) as info:
        read_xlsx(path, ("name", "MOS"), numeric=("MOS",), unique="name")
    assert "scores.xlsx" in str(info.value)


def test_not_a_workbook(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_text("name,MOS\n")
    with pytest.raises(AnnotationError, match="cannot read as an Excel workbook"):
        read_xlsx(path, ("name",))
    with pytest.raises(FileNotFoundError, match="missing.xlsx"):
        read_xlsx(tmp_path / "missing.xlsx", ("name",))


def test_read_table_dispatches_on_suffix(tmp_path):
    (tmp_path / "a.csv").write_text("name,MOS\nx.jpg,3\n")
    workbook(tmp_path / "a.xlsx", [["name", "MOS"], ["x.jpg", 3]])
    for name in ("a.csv", "a.xlsx"):
        _, rows = read_table(tmp_path / name, ("name", "MOS"), numeric=("MOS",))
        assert (rows[0]["name"], rows[0].numbers["MOS"]) == ("x.jpg", 3.0)


def test_text_columns(tmp_path):
    path = tmp_path / "mos_with_names.txt"
    path.write_text("5.51429 I01_01_1.bmp\n\n4.2\ti01_01_2.bmp\n")
    rows = read_text_columns(path, ("mos", "image"), numeric=("mos",))
    assert [(r.line, r["image"], r.numbers["mos"]) for r in rows] == [
        (1, "I01_01_1.bmp", 5.51429),
        (3, "i01_01_2.bmp", 4.2),
    ]
    path.write_text("5.5 a.bmp\nnan b.bmp\n")
    with pytest.raises(AnnotationError, match=r"line 2, column 'mos': 'nan' is not a finite"):
        read_text_columns(path, ("mos", "image"), numeric=("mos",))


def test_mat_variables_and_cell_strings(tmp_path):
    cells = np.empty((1, 3), dtype=object)
    cells[0, :] = ["a.bmp", "b.bmp ", "c.bmp"]
    savemat(tmp_path / "x.mat", {"names": cells, "scores": np.arange(3.0)[None]})
    data = load_mat(tmp_path / "x.mat", ("names",))
    assert set(data) == {"names", "scores"}
    assert mat_strings(data["names"], "x.mat:names") == ["a.bmp", "b.bmp", "c.bmp"]
    with pytest.raises(AnnotationError, match=r"x.mat: has no variable\(s\) \['dmos'\]"):
        load_mat(tmp_path / "x.mat", ("dmos",))
    with pytest.raises(AnnotationError, match="entry 1 is not a string"):
        mat_strings(data["scores"], "x.mat:scores")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(AnnotationError, match="bad.mat: cannot read"):
        load_mat(tmp_path / "bad.mat", ())
