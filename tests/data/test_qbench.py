import json

import pytest
import torch

from iqa_lightning.data import (
    MCQ,
    InstructFormatError,
    MCQDataset,
    collate_mcq,
    letters,
    mcq_prompt,
    read_qbench,
)
from iqa_lightning.data.instruct.qbench import (
    CONCERN_NAMES,
    TYPE_NAMES,
    mcq_to_conversation,
)
from iqa_lightning.tasks import MCQTally

from .fixtures import write_image


def llvisionqa_records():
    """Records as in LLVisionQA's llvisionqa_dev.json: no id, integer type / concern codes."""
    return [
        {
            "img_path": "00079.jpg",
            "question": "Is the image clear?",
            "candidates": ["Yes", "No"],
            "correct_ans": "No",
            "type": 0,
            "concern": 0,
        },
        {
            "img_path": "00080.jpg",
            "question": "How is the lighting of this image?",
            "candidates": ["Dim", "Normal", "Bright"],
            "correct_ans": "Bright",
            "type": 1,
            "concern": 1,
        },
        {
            "img_path": "00081.jpg",
            "question": "What is the most severe distortion on the face?",
            "candidates": ["Noise", "Blur", "Overexposure", "Compression"],
            "correct_ans": "Blur",
            "type": 2,
            "concern": 2,
        },
        {
            "img_path": "00079.jpg",
            "question": "How is the color of the sky?",
            "candidates": ["Vivid", "Faded"],
            "correct_ans": "Faded",
            "type": 1,
            "concern": 3,
        },
    ]


def write_set(root, records=None, name="llvisionqa_dev.json"):
    records = llvisionqa_records() if records is None else records
    for index, path in enumerate(sorted({r["img_path"] for r in records if "img_path" in r})):
        write_image(root / "images" / path, seed=index)
    path = root / name
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def test_reads_the_real_layout_and_maps_codes(tmp_path):
    questions = read_qbench(write_set(tmp_path), tmp_path / "images")
    assert [q.record_id for q in questions] == [f"llvisionqa_dev/{i}" for i in range(4)]
    assert [q.answer_index for q in questions] == [1, 2, 1, 1]
    assert [q.type for q in questions] == ["yes-or-no", "how", "what", "how"]
    assert [q.concern for q in questions] == [
        "distortion",
        "other",
        "in-context-distortion",
        "in-context-other",
    ]
    assert questions[0].image_path == tmp_path / "images" / "00079.jpg"
    assert TYPE_NAMES == ("yes-or-no", "how", "what") and len(CONCERN_NAMES) == 4


def test_names_and_numeric_strings_are_accepted(tmp_path):
    records = llvisionqa_records()
    records[0].update(type="Yes/No", concern="Global Distortion", id=17)
    records[1].update(type="2", concern="local others")
    (first, second, *_) = read_qbench(write_set(tmp_path, records), tmp_path / "images")
    assert (first.record_id, first.type, first.concern) == ("17", "yes-or-no", "distortion")
    assert (second.type, second.concern) == ("what", "in-context-other")


def change(index, **fields):
    def apply(records):
        records[index].update(fields)

    return apply


CASES = {
    "answer not among candidates": (
        change(2, correct_ans="Haze"),
        r"record 2: correct_ans 'Haze' is not among the candidates",
    ),
    "one candidate": (change(1, candidates=["Dim"], correct_ans="Dim"), r"record 1: has 1 cand"),
    "27 candidates": (
        change(1, candidates=[f"option {i}" for i in range(27)], correct_ans="option 0"),
        r"record 1: has 27 candidate",
    ),
    "duplicate candidates": (
        change(3, candidates=["Vivid", "Faded", "Vivid"]),
        r"record 3: duplicate candidate 'Vivid' \(positions 0 and 2\)",
    ),
    "empty candidate": (
        change(3, candidates=["Vivid", " "]),
        r"record 3: candidates\[1\] is empty",
    ),
    "unknown type": (change(0, type=7), r"record 0: unknown type 7"),
    "unknown concern": (change(0, concern="style", id="q0"), r"record 0 \(id 'q0'\).*concern"),
    "no question": (change(1, question=""), r"record 1: 'question'"),
    "no answer": (change(1, correct_ans=None), r"record 1: has no 'correct_ans'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_errors_name_file_and_record(tmp_path, case):
    apply, pattern = CASES[case]
    records = llvisionqa_records()
    apply(records)
    path = write_set(tmp_path, records)
    with pytest.raises(InstructFormatError, match=pattern) as info:
        read_qbench(path, tmp_path / "images")
    assert str(path) in str(info.value)


def test_missing_img_path_and_missing_type(tmp_path):
    records = llvisionqa_records()
    del records[1]["img_path"]
    with pytest.raises(InstructFormatError, match="record 1: has no 'img_path' key"):
        read_qbench(write_set(tmp_path, records), tmp_path / "images")
    records = llvisionqa_records()
    del records[2]["type"]
    with pytest.raises(InstructFormatError, match="record 2: has no 'type' key"):
        read_qbench(write_set(tmp_path, records), tmp_path / "images")


def test_hidden_answers_can_be_kept(tmp_path):
    records = llvisionqa_records()
    for record in records:
        del record["correct_ans"]
    questions = read_qbench(write_set(tmp_path, records), tmp_path / "images", require_answer=False)
    assert [q.answer_index for q in questions] == [-1] * 4


def test_skip_mode_counts(tmp_path):
    path = write_set(tmp_path)
    (tmp_path / "images" / "00079.jpg").unlink()
    questions = read_qbench(path, tmp_path / "images", on_bad_image="skip")
    assert len(questions) == 2 and len(questions.skipped) == 2
    assert {row[0] for row in questions.skipped} == {"llvisionqa_dev/0", "llvisionqa_dev/3"}


def test_prompt_and_letters():
    mcq = MCQ("q", "x.png", "How is the lighting?", ["Dim", "Normal", "Bright"], 2, "how", "other")
    assert letters(mcq) == ["A", "B", "C"]
    assert mcq_prompt(mcq) == (
        "How is the lighting?\nA. Dim\nB. Normal\nC. Bright\n"
        "Answer with the option's letter from the given choices directly."
    )
    conversation = mcq_to_conversation(mcq)
    assert conversation.turns == [(mcq_prompt(mcq), "C")]


def test_dataset_and_collate(tmp_path):
    questions = read_qbench(write_set(tmp_path), tmp_path / "images")
    dataset = MCQDataset(questions, image_size=12)
    item = dataset[2]
    assert item["pixels"].shape == (3, 12, 12)
    assert item["letters"] == ["A", "B", "C", "D"] and item["answer_index"] == 1
    assert item["prompt"].startswith("What is the most severe distortion on the face?\nA. Noise")
    batch = collate_mcq([dataset[i] for i in range(4)])
    assert set(batch) == {
        "pixels",
        "prompt",
        "letters",
        "answer_index",
        "type",
        "concern",
        "record_id",
        "answer_by",
        "max_new_tokens",
    }
    assert batch["answer_by"] == ["likelihood"] * 4  # the default; instruct.mcq_answer=generate
    assert batch["pixels"].shape == (4, 3, 12, 12)
    assert torch.equal(batch["answer_index"], torch.tensor([1, 2, 1, 1]))
    assert batch["type"] == ["yes-or-no", "how", "what", "how"]


def test_accuracy_overall_by_type_and_by_concern(tmp_path):
    # Q-Bench accuracy is tallied by iqa_lightning.tasks.MCQTally over the batch's type and
    # concern lists (what collate_mcq gives).
    questions = read_qbench(write_set(tmp_path), tmp_path / "images")
    batch = collate_mcq(list(MCQDataset(questions, image_size=8)))
    predictions = [1, 0, 1, 1]
    correct = [p == a for p, a in zip(predictions, batch["answer_index"].tolist(), strict=True)]
    tally = MCQTally()
    tally.update(correct, batch["type"], batch["concern"])
    accuracy = {key: float(value) for key, value in tally.compute("val/").items()}
    assert accuracy == {
        "val/mcq_acc": 0.75,
        "val/mcq_acc/concern/distortion": 1.0,
        "val/mcq_acc/concern/in-context-distortion": 1.0,
        "val/mcq_acc/concern/in-context-other": 1.0,
        "val/mcq_acc/concern/other": 0.0,
        "val/mcq_acc/type/how": 0.5,
        "val/mcq_acc/type/what": 1.0,
        "val/mcq_acc/type/yes-or-no": 1.0,
    }
