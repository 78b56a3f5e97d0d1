import json
import logging

import pytest

from iqa_lightning.data import InstructDataModule, InstructFormatError, read_qinstruct

from .fixtures import write_image
from .fixtures_files import qalign_pair, write_qalign_conversations


def kadid_conversations(root, n=12, pairs=0, **kwargs):
    """Q-Align's KADID conversation layout: ``kadid10k/<image>`` paths and ``<|image|>``."""
    names = [f"kadid10k/I{i + 1:02d}_01_01.png" for i in range(n)]
    for i, name in enumerate(names):
        write_image(root / name, seed=i)
    couples = [(names[k], names[k + 1]) for k in range(pairs)]
    scores = [1.2 + 3.4 * i / max(1, n - 1) for i in range(n)]
    return write_qalign_conversations(
        root / "train_kadid.json", names, scores, (1, 5), pairs=couples, **kwargs
    )


def test_mplug_owl2_placeholder_is_accepted_and_removed(tmp_path):
    path = kadid_conversations(tmp_path, n=4)
    record = json.loads(path.read_text())[0]
    assert record["conversations"][0]["value"].endswith("?\n<|image|>")
    conversations = read_qinstruct(path, tmp_path)
    assert len(conversations) == 4 and conversations.skipped == []
    question, answer = conversations[0].turns[0]
    assert question == "How would you rate the quality of this image?"
    assert answer.startswith("The quality of the image is ")
    assert conversations[0].image_path == tmp_path / "kadid10k" / "I01_01_01.png"


def rewrite(path, change):
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records, indent=4))
    return path


@pytest.mark.parametrize(
    "value,match",
    [
        ("<image>\nRate it.\n<|image|>", r"has 2 '<image>' placeholder\(s\) \(or '<\|image\|>'\)"),
        ("<|image|>Rate <|image|> it.", "has 2"),
        ("Rate <|image|> the quality.", "'<|image|>' must stand at the start or the end"),
    ],
)
def test_placeholder_rules_cover_both_placeholders(tmp_path, value, match):
    path = kadid_conversations(tmp_path, n=3)
    rewrite(path, lambda r: r[1]["conversations"][0].update(value=value))
    with pytest.raises(InstructFormatError, match=match) as info:
        read_qinstruct(path, tmp_path)
    assert "record 1 (id 'I02_01_01.png->" in str(info.value)


def test_mplug_owl2_placeholder_in_an_answer_is_an_error(tmp_path):
    path = kadid_conversations(tmp_path, n=3)
    rewrite(path, lambda r: r[2]["conversations"][1].update(value="<|image|> good"))
    with pytest.raises(InstructFormatError, match=r"conversations\[1\] holds '<\|image\|>'"):
        read_qinstruct(path, tmp_path)


def test_multi_image_records_are_skipped_counted_and_logged_once(tmp_path, caplog):
    path = kadid_conversations(tmp_path, n=12, pairs=4)
    records = json.loads(path.read_text())
    assert sum(isinstance(r["image"], list) for r in records) == 4
    assert isinstance(records[3]["image"], list)  # not only at the end of the file
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        conversations = read_qinstruct(path, tmp_path)
    assert len(conversations) == 12
    assert len(conversations.skipped) == 4
    record_id, paths, reason = conversations.skipped[0]
    assert record_id == "I01_01_01.png-I02_01_01.png"
    assert paths == "kadid10k/I01_01_01.png | kadid10k/I02_01_01.png"
    assert reason.startswith("2 images in one record")
    warnings = [r.getMessage() for r in caplog.records if "two or more images" in r.getMessage()]
    assert len(warnings) == 1
    assert "skipped 4 of 16 record(s)" in warnings[0]
    assert "'I01_01_01.png-I02_01_01.png'" in warnings[0]


def test_multi_image_skips_join_bad_image_skips(tmp_path):
    path = kadid_conversations(tmp_path, n=6, pairs=2)
    (tmp_path / "kadid10k" / "I05_01_01.png").write_bytes(b"")
    conversations = read_qinstruct(path, tmp_path, on_bad_image="skip")
    assert len(conversations) == 5
    reasons = [reason for _, _, reason in conversations.skipped]
    assert sum(r.startswith("2 images") for r in reasons) == 2
    assert sum("empty" in r for r in reasons) == 1


def test_image_list_of_one_path_is_that_image(tmp_path):
    path = kadid_conversations(tmp_path, n=3)
    rewrite(path, lambda r: r[0].update(image=[r[0]["image"]]))
    conversations = read_qinstruct(path, tmp_path)
    assert conversations[0].image_path == tmp_path / "kadid10k" / "I01_01_01.png"
    rewrite(path, lambda r: r[0].update(image=[]))
    with pytest.raises(InstructFormatError, match="record 0 .*'image' is an empty list"):
        read_qinstruct(path, tmp_path)


def test_a_file_of_only_multi_image_records_is_an_error(tmp_path):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name)
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([qalign_pair("a.png", "b.png", True)] * 2))
    with pytest.raises(InstructFormatError, match="every one of its 2 record"):
        read_qinstruct(path, tmp_path)


def test_instruct_data_module_lists_multi_image_skips(tmp_path):
    path = kadid_conversations(tmp_path, n=6, pairs=2)
    dm = InstructDataModule(qinstruct_json=path, image_size=16)
    assert dm.prepare_records()["instruct"] == 6
    assert len(dm.skipped) == 2
    rows = dm.write_skipped(tmp_path / "skipped.csv").read_text().splitlines()
    assert rows[0] == "task,id,path,reason" and len(rows) == 3
    assert rows[1].startswith("instruct,I01_01_01.png-I02_01_01.png,")
