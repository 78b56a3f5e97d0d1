import pickle
from collections import Counter

import pytest

from iqa_lightning.data import (
    AGIQA3KDataModule,
    AnnotationError,
    CLIVEDataModule,
    CSIQDataModule,
    KADIDDataModule,
    KonIQDataModule,
    LIVEDataModule,
    PIPALDataModule,
    SPAQDataModule,
    SplitError,
    TID2013DataModule,
    read_meta_info,
    read_split_pickle,
)

from .fixtures import koniq_set_of, write_kadid
from .fixtures_more import (
    KONIQ_PYIQA_CODES,
    KONIQ_PYIQA_VERSIONS,
    pyiqa_phase,
    write_live,
    write_pyiqa_agiqa,
    write_pyiqa_kadid,
    write_pyiqa_koniq,
)

MODULES = {
    "live": (LIVEDataModule, ["dmos.mat", "jp2k", "meta_info_LIVEIQADataset.csv"]),
    "csiq": (CSIQDataModule, ["csiq.DMOS.xlsx", "csiq.DMOS.csv", "meta_info_CSIQDataset.csv"]),
    "tid2013": (TID2013DataModule, ["mos_with_names.txt", "meta_info_TID2013Dataset.csv"]),
    "clive": (CLIVEDataModule, ["AllMOS_release.mat", "meta_info_LIVEChallengeDataset.csv"]),
    "spaq": (SPAQDataModule, ["MOS and Image attribute scores.xlsx", "meta_info_SPAQDataset.csv"]),
    "pipal": (PIPALDataModule, ["Train_Label", "MOS_Scores_train", "meta_info_PIPALDataset.csv"]),
    "kadid": (KADIDDataModule, ["dmos.csv", "images", "meta_info_KADID10kDataset.csv"]),
    "koniq": (
        KonIQDataModule,
        ["koniq10k_distributions_sets.csv", "meta_info_KonIQ10kDataset.csv"],
    ),
    "agiqa": (AGIQA3KDataModule, ["data.csv", "meta_info_AGIQA-3K.csv"]),
}


def make(cls, root, **kwargs):
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 4)
    dm = cls(root=root, **kwargs)
    dm.setup("fit")
    return dm


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- meta-info files ------------------------------------------------------------------------


def test_read_meta_info_by_position(tmp_path):
    nr = write(tmp_path / "nr.csv", "Image name,MOS,Brightness,Brightness,official_split\n"
               "a.jpg,40.5,1,2,train\nb.jpg,60,1,2,test\n")  # fmt: skip
    header, rows = read_meta_info(nr, "nr")
    assert header[:2] == ["Image name", "MOS"]
    assert [(r.index, r.line, r.name, r.ref_name, r.mos) for r in rows] == [
        (0, 2, "a.jpg", None, 40.5),
        (1, 3, "b.jpg", None, 60.0),
    ]
    assert rows[1].values["official_split"] == "test" and rows[1].source == nr
    fr = write(tmp_path / "fr.csv", "hq_name,dist_name,elo_score\nA1.bmp,A1_00.bmp,1500.5\n")
    _, rows = read_meta_info(fr, "fr")
    assert (rows[0].ref_name, rows[0].name, rows[0].mos) == ("A1.bmp", "A1_00.bmp", 1500.5)


@pytest.mark.parametrize(
    "text,match",
    [
        ("name\na.jpg\n", r"start with the columns \(name, mos"),
        ("name,mos\na.jpg,4\nb.jpg,x\n", r"line 3, column 'mos': 'x' is not a number"),
        ("name,mos\na.jpg,4\na.jpg,5\n", r"duplicate name 'a.jpg' on lines 2 and 3"),
        ("name,mos\n,4\n", r"line 2, column 'name': value is empty"),
        ("name,mos\na.jpg,4,7\n", r"line 2: has 3 fields but the header has 2"),
        ("name,mos\n", "no data rows"),
    ],
)
def test_read_meta_info_errors_name_file_line_column(tmp_path, text, match):
    path = write(tmp_path / "meta_info_X.csv", text)
    with pytest.raises(AnnotationError, match=match) as info:
        read_meta_info(path, "nr")
    assert "meta_info_X.csv" in str(info.value)


# --- split pickles --------------------------------------------------------------------------


def test_read_split_pickle(tmp_path):
    path = tmp_path / "live_123.pkl"
    path.write_bytes(
        pickle.dumps({1: {"train": [0, 2], "val": [1], "test": []}, 2: {"train": [1]}})
    )
    assert read_split_pickle(path, 1, 4) == ["train", "val", "train", None]
    assert read_split_pickle(path, 2, 2) == [None, "train"]


@pytest.mark.parametrize(
    "data,match",
    [
        ({1: {"train": [0]}}, r"has no split 3 \(dataset.split_index\); it holds splits \[1\]"),
        ({3: {"train": [5]}}, r"part 'train': row index 5 is not one of the 4 rows"),
        ({3: {"train": [0], "val": [0]}}, r"row index 0 is in both 'train' and 'val'"),
        ({3: {"training": [0]}}, r"expected keys among \['train', 'val', 'test'\]"),
        ([0, 1], "expected a dict"),
        ({3: {"train": range(1)}}, "refusing to load builtins.range"),
    ],
)
def test_read_split_pickle_errors(tmp_path, data, match):
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(AnnotationError, match=match):
        read_split_pickle(path, 3, 4)


# --- layout detection -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_there_lists_every_file_looked_for(tmp_path, name):
    cls, expected = MODULES[name]
    (tmp_path / "data" / name).mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as info:
        make(cls, tmp_path / "data" / name)
    message = str(info.value)
    for part in expected:
        assert part in message, part
    assert str(tmp_path / "data" / "meta_info") in message and "dataset.layout" in message


def test_auto_prefers_published_and_falls_back_to_pyiqa(tmp_path):
    root = write_live(tmp_path / "LIVE", layout="both")
    assert make(LIVEDataModule, root).resolved_layout == "published"
    assert make(LIVEDataModule, root, layout="pyiqa").resolved_layout == "pyiqa"
    (root / "dmos.mat").unlink()
    assert make(LIVEDataModule, root).resolved_layout == "pyiqa"
    with pytest.raises(FileNotFoundError, match="dmos.mat"):
        make(LIVEDataModule, root, layout="published")


def test_layout_pyiqa_without_meta_file_lists_places(tmp_path):
    root = write_live(tmp_path / "LIVE")
    with pytest.raises(FileNotFoundError) as info:
        make(LIVEDataModule, root, layout="pyiqa")
    message = str(info.value)
    assert message.count("meta_info_LIVEIQADataset.csv") == 3
    assert str(root / "meta_info" / "meta_info_LIVEIQADataset.csv") in message


def test_meta_file_in_root_or_given_explicitly(tmp_path):
    root = write_live(tmp_path / "LIVE", layout="pyiqa")
    meta = tmp_path / "meta_info" / "meta_info_LIVEIQADataset.csv"
    moved = meta.rename(root / "my_live.csv")
    assert make(LIVEDataModule, root, meta_file="my_live.csv").resolved_layout == "pyiqa"
    assert make(LIVEDataModule, root, meta_file=str(moved)).resolved_layout == "pyiqa"
    moved.rename(root / "meta_info_LIVEIQADataset.csv")
    assert make(LIVEDataModule, root).resolved_layout == "pyiqa"


# --- pyiqa splits ---------------------------------------------------------------------------


def test_two_part_split_column_held_out_part_is_test(tmp_path):
    root = write_live(tmp_path / "LIVE", layout="pyiqa")
    dm = make(LIVEDataModule, root, split="pyiqa", split_column="ratio802_seed123_split_01")
    refs = sorted({r.ref_id for r in dm.records()})
    held_out = {ref for i, ref in enumerate(refs) if pyiqa_phase(i) == "val"}
    assert {r.ref_id for r in dm.records("test")} == held_out
    per_split = {s: {r.ref_id for r in dm.records(s)} for s in ("train", "val", "test")}
    assert [len(per_split[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert not (per_split["train"] & per_split["val"])
    assert all(r.source_split in ("train", "val") for r in dm.records())


def test_split_pickle_selection(tmp_path):
    root = write_live(tmp_path / "LIVE", layout="pyiqa")
    one = make(LIVEDataModule, root, split="pyiqa", split_file="live_123.pkl", split_index=1)
    two = make(LIVEDataModule, root, split="pyiqa", split_file="live_123.pkl", split_index=2)
    column = make(LIVEDataModule, root, split="pyiqa", split_column="ratio802_seed123_split_01")
    assert one.split_table() == column.split_table()
    assert {r.ref_id for r in one.records("test")} != {r.ref_id for r in two.records("test")}
    with pytest.raises(AnnotationError, match=r"no split 9 .*splits \[1, 2\]"):
        make(LIVEDataModule, root, split="pyiqa", split_file="live_123.pkl", split_index=9)
    with pytest.raises(FileNotFoundError, match="train_split_info"):
        make(LIVEDataModule, root, split="pyiqa", split_file="live_999.pkl")


def test_unknown_split_column_lists_the_split_columns(tmp_path):
    root = write_live(tmp_path / "LIVE", layout="pyiqa")
    with pytest.raises(ValueError, match=r"no split column 'ratio802_seed123_split_07'.*\['ratio"):
        make(LIVEDataModule, root, split="pyiqa", split_column="ratio802_seed123_split_07")


def test_split_pyiqa_reads_the_meta_file_even_with_published_files(tmp_path):
    root = write_live(tmp_path / "LIVE", layout="both")
    dm = make(LIVEDataModule, root, split="pyiqa", split_column="ratio802_seed123_split_01")
    assert dm.resolved_layout == "pyiqa"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"split": "pyiqa"}, "needs dataset.split_column"),
        ({"split_column": "official_split"}, "split=column or dataset.split=pyiqa"),
        ({"split": "pyiqa", "split_column": "a", "split_file": "b.pkl"}, "only one of"),
        ({"split": "pyiqa", "split_column": "a", "layout": "published"}, "layout=pyiqa or auto"),
        ({"layout": "pyiqa_v2"}, r"dataset.layout must be one of \['auto', 'published', 'pyiqa'\]"),
        ({"split": "pyiqa", "split_file": "x.pkl", "split_index": "1"}, "split_index must be"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIVEDataModule(root="/nonexistent", **kwargs)


# --- KonIQ, KADID, AGIQA in pyiqa's layout ---------------------------------------------------


@pytest.mark.parametrize("version", KONIQ_PYIQA_VERSIONS)
def test_koniq_official_split_from_meta_file(tmp_path, version):
    root = write_pyiqa_koniq(tmp_path / "koniq10k", n_images=30, version=version)
    dm = make(KonIQDataModule, root)
    assert dm.resolved_layout == "pyiqa"
    assert dm.num_records == {"train": 21, "val": 3, "test": 6}
    assert dm.records()[0].path.parent == root / "512x384"
    assert dm.records()[0].mos_raw == pytest.approx(10.0)
    names = [r.image_id for r in dm.records()]
    phase = {"training": "train", "validation": "val", "test": "test"}
    assert dict(dm.split_table()) == {n: phase[koniq_set_of(i)] for i, n in enumerate(names)}


def test_koniq_meta_file_is_pyiqas_real_format(tmp_path):
    root = write_pyiqa_koniq(tmp_path / "koniq10k", n_images=10)
    raw = (root.parent / "meta_info" / "meta_info_KonIQ10kDataset.csv").read_bytes()
    assert raw.startswith(b"img_name,mos,std,split,c1,c2,c3,c4,c5,c_total\r\n")
    codes = [line.split(b",")[3] for line in raw.splitlines()[1:]]
    assert set(codes) == {b"0", b"1", b"2"}


def test_koniq_split_codes_map_to_the_official_sets(tmp_path):
    # pyiqa's scripts/process_koniq10k.py: training -> 0, validation -> 1, test -> 2; on the
    # full file that gives the authors' 7058 / 1000 / 2015 images.
    assert KONIQ_PYIQA_CODES == {"training": "0", "validation": "1", "test": "2"}
    assert KonIQDataModule.pyiqa_split_codes == {"0": "train", "1": "val", "2": "test"}
    root = write_pyiqa_koniq(tmp_path / "koniq10k", n_images=100)
    dm = make(KonIQDataModule, root)
    assert dm.num_records == {"train": 70, "val": 10, "test": 20}
    assert {r.official_split for r in dm.records()} == {"train", "val", "test"}


def test_koniq_split_column_with_codes_as_a_pyiqa_split(tmp_path):
    root = write_pyiqa_koniq(tmp_path / "koniq10k", n_images=30)
    column = make(KonIQDataModule, root, split="pyiqa", split_column="split")
    official = make(KonIQDataModule, root)
    assert column.split_table() == official.split_table()


def test_codes_of_another_dataset_are_not_guessed(tmp_path):
    root = write_pyiqa_koniq(tmp_path / "koniq10k", n_images=30)

    class NoCodes(KonIQDataModule):
        pyiqa_split_codes = {}

    with pytest.raises(SplitError, match="unknown official split '0'"):
        make(NoCodes, root)


def test_koniq_split_column_and_official_pickle_agree(tmp_path):
    root = write_pyiqa_koniq(tmp_path / "koniq10k", n_images=30, version="official_split")
    column = make(KonIQDataModule, root, split="pyiqa", split_column="official_split")
    pickled = make(KonIQDataModule, root, split="pyiqa", split_file="koniq10k_official.pkl")
    official = make(KonIQDataModule, root)
    assert column.split_table() == pickled.split_table() == official.split_table()


def test_kadid_pyiqa_layout(tmp_path):
    pyiqa = make(KADIDDataModule, write_pyiqa_kadid(tmp_path / "a" / "kadid10k"))
    published = make(KADIDDataModule, write_kadid(tmp_path / "b" / "kadid10k"))
    assert pyiqa.resolved_layout == "pyiqa"
    assert [(r.image_id, r.mos_raw, r.ref_id) for r in pyiqa.records()] == [
        (r.image_id, r.mos_raw, r.ref_id) for r in published.records()
    ]
    assert pyiqa.split_table() == published.split_table()


def test_agiqa_pyiqa_layout_and_seeded_split_column(tmp_path):
    root = write_pyiqa_agiqa(tmp_path / "AGIQA-3K", n_images=30)
    dm = make(AGIQA3KDataModule, root)
    assert dm.resolved_layout == "pyiqa" and dm.records()[0].path.is_file()
    assert dm.records()[0].mos_raw == pytest.approx(0.2)
    split = make(AGIQA3KDataModule, root, split="pyiqa", split_column="ratio802_seed123_split_01")
    assert Counter(s for _, s in split.split_table()) == {"train": 21, "val": 3, "test": 6}
