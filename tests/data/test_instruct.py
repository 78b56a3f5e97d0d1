import json
import logging

import pytest
import torch

from iqa_lightning.data import (
    Conversation,
    InstructDataset,
    InstructFormatError,
    MissingImageError,
    collate_instruct,
    read_qinstruct,
)

from .fixtures import write_image


def human(text):
    return {"from": "human", "value": text}


def gpt(text):
    return {"from": "gpt", "value": text}


def qinstruct_records():
    """Records as in Q-Instruct's cleaned_labels.json (LLaVA layout), images in two folders."""
    return [
        {
            "id": "spaq-00001",
            "image": "spaq_koniq/00001.jpg",
            "conversations": [
                human("<image>\nHow is the clarity of this image?"),
                gpt("The clarity is poor; the edges are blurred."),
            ],
        },
        {
            "id": "livefb-7",
            "image": "livefb_liveitw_aigc/7.png",
            "conversations": [
                human("Describe the lighting of the image.\n<image>"),
                gpt("The lighting is dim."),
                human("Is there noise?"),
                gpt("Yes, some noise in the dark areas."),
            ],
        },
        {
            "image": "spaq_koniq/00002.jpg",
            "conversations": [human("<image>\nRate the quality."), gpt("The quality is good.")],
        },
    ]


def write_set(root, records=None):
    """Write the records to ``root/labels.json`` and an image for every distinct path."""
    records = qinstruct_records() if records is None else records
    for index, path in enumerate(sorted({r["image"] for r in records if "image" in r})):
        write_image(root / path, seed=index)
    path = root / "labels.json"
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def test_reads_the_real_layout(tmp_path):
    conversations = read_qinstruct(write_set(tmp_path), tmp_path)
    assert [c.record_id for c in conversations] == [
        "spaq-00001",
        "livefb-7",
        "spaq_koniq/00002.jpg#2",  # no id in the record: image path and index
    ]
    first, second, _ = conversations
    assert first == Conversation(
        "spaq-00001",
        tmp_path / "spaq_koniq" / "00001.jpg",
        [("How is the clarity of this image?", "The clarity is poor; the edges are blurred.")],
    )
    assert second.turns == [
        ("Describe the lighting of the image.", "The lighting is dim."),
        ("Is there noise?", "Yes, some noise in the dark areas."),
    ]
    assert conversations.skipped == []


def test_relative_paths_outside_the_root_are_normalised(tmp_path):
    records = [dict(qinstruct_records()[0], image="../images/a.png")]
    write_image(tmp_path / "images" / "a.png")
    json_path = tmp_path / "set" / "labels.json"
    json_path.parent.mkdir()
    json_path.write_text(json.dumps(records))
    (conversation,) = read_qinstruct(json_path, json_path.parent)
    assert conversation.image_path == tmp_path / "images" / "a.png"


def broken(change):
    records = qinstruct_records()
    change(records)
    return records


CASES = {
    "placeholder missing": (
        lambda r: r[1]["conversations"][0].update(value="Describe the lighting."),
        r"record 1 \(id 'livefb-7'\).*has no '<image>'",
    ),
    "placeholder twice": (
        lambda r: r[0]["conversations"][0].update(value="<image>\nHow is it?\n<image>"),
        r"record 0 \(id 'spaq-00001'\).*has 2 '<image>'",
    ),
    "placeholder inside the text": (
        lambda r: r[0]["conversations"][0].update(value="How is <image> the clarity?"),
        r"record 0 \(id 'spaq-00001'\).*start or the end",
    ),
    "placeholder in a later turn": (
        lambda r: r[1]["conversations"][2].update(value="<image>\nIs there noise?"),
        r"record 1 \(id 'livefb-7'\).*conversations\[2\].*only the first human turn",
    ),
    "placeholder in an answer": (
        lambda r: r[0]["conversations"][1].update(value="<image> poor"),
        r"record 0 \(id 'spaq-00001'\).*conversations\[1\]",
    ),
    "starts with gpt": (
        lambda r: r[0]["conversations"].reverse(),
        r"record 0 \(id 'spaq-00001'\).*is from 'gpt', expected 'human'",
    ),
    "two human turns in a row": (
        lambda r: r[1]["conversations"].__setitem__(1, human("again")),
        r"record 1 \(id 'livefb-7'\).*conversations\[1\].*alternate",
    ),
    "question without answer": (
        lambda r: r[1]["conversations"].pop(),
        r"record 1 \(id 'livefb-7'\).*without a 'gpt' answer",
    ),
    "empty answer": (
        lambda r: r[1]["conversations"][3].update(value="  \n"),
        r"record 1 \(id 'livefb-7'\).*conversations\[3\] answer is empty",
    ),
    "no image key": (
        lambda r: r[2].pop("image"),
        r"record 2: has no 'image' key",
    ),
    "no conversations": (
        lambda r: r[0].update(conversations=[]),
        r"record 0 \(id 'spaq-00001'\).*non-empty list",
    ),
    "value not text": (
        lambda r: r[0]["conversations"][1].update(value=5),
        r"record 0 \(id 'spaq-00001'\).*must be text",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_format_errors_name_file_and_record(tmp_path, case):
    change, pattern = CASES[case]
    records = broken(change)
    path = write_set(tmp_path, records)
    with pytest.raises(InstructFormatError, match=pattern) as info:
        read_qinstruct(path, tmp_path)
    assert str(path) in str(info.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.json"):
        read_qinstruct(tmp_path / "labels.json", tmp_path)
    path = tmp_path / "labels.json"
    path.write_text('[{"id": 1,}]')
    with pytest.raises(InstructFormatError, match=r"invalid JSON at line 1"):
        read_qinstruct(path, tmp_path)
    path.write_text('{"id": 1}')
    with pytest.raises(InstructFormatError, match="must be a list"):
        read_qinstruct(path, tmp_path)
    path.write_text("[]")
    with pytest.raises(InstructFormatError, match="no records"):
        read_qinstruct(path, tmp_path)


def test_missing_image_is_an_error_naming_record_and_path(tmp_path):
    path = write_set(tmp_path)
    (tmp_path / "livefb_liveitw_aigc" / "7.png").unlink()
    with pytest.raises(MissingImageError) as info:
        read_qinstruct(path, tmp_path)
    message = str(info.value)
    assert "record 1 (id 'livefb-7')" in message and "7.png" in message
    assert "1 of 3 record(s)" in message and "on_bad_image=skip" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_skip_mode_counts_logs_and_lists(tmp_path, caplog):
    path = write_set(tmp_path)
    (tmp_path / "livefb_liveitw_aigc" / "7.png").unlink()
    (tmp_path / "spaq_koniq" / "00002.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="iqa_lightning.data"):
        conversations = read_qinstruct(path, tmp_path, on_bad_image="skip")
    assert [c.record_id for c in conversations] == ["spaq-00001"]
    assert [(rid, why) for rid, _, why in conversations.skipped][0] == (
        "livefb-7",
        "file does not exist",
    )
    assert len(conversations.skipped) == 2 and conversations.skipped[1][0].endswith("#2")
    assert "skipped 2 of 3" in caplog.text
    with pytest.raises(ValueError, match="on_bad_image"):
        read_qinstruct(path, tmp_path, on_bad_image="ignore")


def test_dataset_and_collate(tmp_path):
    conversations = read_qinstruct(write_set(tmp_path), tmp_path)
    dataset = InstructDataset(conversations, image_size=20)
    item = dataset[1]
    assert item["pixels"].shape == (3, 20, 20) and item["pixels"].dtype == torch.float32
    assert 0.0 <= item["pixels"].min() and item["pixels"].max() <= 1.0
    assert item["record_id"] == "livefb-7" and len(item["turns"]) == 2
    batch = collate_instruct([dataset[i] for i in range(3)])
    assert batch["pixels"].shape == (3, 3, 20, 20)
    assert batch["record_id"] == [c.record_id for c in conversations]
    assert batch["turns"][0] == [
        ("How is the clarity of this image?", conversations[0].turns[0][1])
    ]
