import json
import re
import time

import pytest
from PIL import Image

from iqa_lightning.data import (
    generate_synthetic_instruct,
    generate_synthetic_kadid,
    read_qbench,
    read_qinstruct,
)
from iqa_lightning.data.instruct.synthetic import (
    DESCRIPTIONS_FILE,
    MARKER,
    QBENCH_FILES,
    QINSTRUCT_FILE,
)
from iqa_lightning.data.instruct.templates import QUALITY_WORDS, quality_word

from .fixtures import write_kadid

SMALL = {"n_refs": 4, "image_size": 24, "levels": 3, "seed": 0}


@pytest.fixture(scope="module")
def kadid(tmp_path_factory):
    return generate_synthetic_kadid(tmp_path_factory.mktemp("synth") / "kadid", **SMALL)


@pytest.fixture(scope="module")
def instruct(kadid):
    return generate_synthetic_instruct(kadid, kadid.parent / "instruct", seed=0)


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def ref_of(path):
    return re.search(r"(I\d\d)[_.]", path.rsplit("/", 1)[-1])[1]


def test_layout_and_real_formats(instruct):
    names = sorted(p.name for p in instruct.iterdir())
    expected = [MARKER, QINSTRUCT_FILE, DESCRIPTIONS_FILE, "composites", *QBENCH_FILES.values()]
    assert names == sorted(expected)
    conversations = read_qinstruct(instruct / QINSTRUCT_FILE, instruct)
    kinds = {c.record_id.rsplit("-", 1)[1].rstrip("0123456789") for c in conversations}
    assert kinds == {"perception", "quality", "pair"}
    for conversation in conversations:
        assert conversation.image_path.is_file()
    raw = load(instruct / QINSTRUCT_FILE)[0]
    assert set(raw) == {"id", "image", "conversations"}
    assert raw["conversations"][0]["value"].startswith("<image>\n")
    for split, file in QBENCH_FILES.items():
        questions = read_qbench(instruct / file, instruct)  # validates answer in candidates
        assert questions, split
        assert {q.type for q in questions} == {"yes-or-no", "what", "how"}
        assert {q.concern for q in questions} == {"distortion", "other"}
        assert all(2 <= len(q.candidates) <= 4 for q in questions)
        for record in load(instruct / file):
            assert record["correct_ans"] in record["candidates"]
            assert set(record) == {
                *("id", "img_path", "question", "candidates", "correct_ans", "type", "concern")
            }


def test_splits_are_reference_disjoint_and_conversations_train_only(instruct):
    refs = {
        split: {ref_of(r["img_path"]) for r in load(instruct / file)}
        for split, file in QBENCH_FILES.items()
    }
    assert all(refs.values())
    assert not refs["train"] & refs["val"] and not refs["train"] & refs["test"]
    assert not refs["val"] & refs["test"]
    assert set().union(*refs.values()) == {f"I{i:02d}" for i in range(1, 5)}
    instruct_refs = {ref_of(r["image"]) for r in load(instruct / QINSTRUCT_FILE)}
    assert instruct_refs == refs["train"]


def test_explanations_end_with_the_quality_word_of_the_mos(instruct, kadid):
    mos = {}
    for line in (kadid / "dmos.csv").read_text().splitlines()[1:]:
        name, _, score, _ = line.split(",")
        mos[name] = float(score)
    explanations = [r for r in load(instruct / QINSTRUCT_FILE) if r["id"].endswith("-quality")]
    assert explanations
    for record in explanations:
        answer = record["conversations"][1]["value"]
        word = quality_word(mos[record["image"].rsplit("/", 1)[-1]])
        assert answer.endswith(f"the quality of the image is {word}.")
    assert [quality_word(m) for m in (1.0, 1.9, 2.7, 3.5, 4.3, 5.0)] == [
        "bad",
        "poor",
        "fair",
        "good",
        "excellent",
        "excellent",
    ]
    assert QUALITY_WORDS[-1] == "excellent"


def test_composites_are_two_versions_side_by_side(instruct, kadid):
    pairs = [r for r in load(instruct / QINSTRUCT_FILE) if "-pair" in r["id"]]
    assert pairs
    for record in pairs:
        with Image.open(instruct / record["image"]) as image:
            assert image.size == (2 * SMALL["image_size"], SMALL["image_size"])
        question, answer = (m["value"] for m in record["conversations"])
        assert "sharper" in question and re.match(r"The (left|right) half is sharper", answer)
    mcqs = [r for f in QBENCH_FILES.values() for r in load(instruct / f) if "-pair" in r["id"]]
    assert {r["correct_ans"] for r in mcqs} <= {"Left", "Right"}


def test_deterministic_per_seed(instruct, kadid):
    again = generate_synthetic_instruct(kadid, kadid.parent / "again", seed=0)
    files = [QINSTRUCT_FILE, *QBENCH_FILES.values()]
    files += [f"composites/{p.name}" for p in (instruct / "composites").iterdir()]
    for file in files:
        assert (again / file).read_bytes() == (instruct / file).read_bytes(), file
    other = generate_synthetic_instruct(kadid, kadid.parent / "other", seed=1)
    assert (other / QINSTRUCT_FILE).read_bytes() != (instruct / QINSTRUCT_FILE).read_bytes()


def test_existing_set_is_reused_and_conflicts_refused(instruct, kadid):
    stamp = (instruct / QINSTRUCT_FILE).stat().st_mtime_ns
    assert generate_synthetic_instruct(kadid, instruct, seed=0) == instruct
    assert (instruct / QINSTRUCT_FILE).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="generated with"):
        generate_synthetic_instruct(kadid, instruct, seed=3)


def test_given_reference_splits_are_followed(kadid, tmp_path):
    splits = {"I01.png": "val", "I02.png": "train", "I03.png": "test", "I04.png": "train"}
    out = generate_synthetic_instruct(kadid, tmp_path / "given", seed=0, splits=splits)
    for split, file in QBENCH_FILES.items():
        refs = {ref_of(r["img_path"]) + ".png" for r in load(out / file)}
        assert refs == {ref for ref, name in splits.items() if name == split}
    with pytest.raises(ValueError, match=r"bad \{'I04.png': 'dev'\}"):
        generate_synthetic_instruct(kadid, tmp_path / "bad", splits={**splits, "I04.png": "dev"})
    del splits["I04.png"]
    with pytest.raises(ValueError, match=r"missing \['I04.png'\]"):
        generate_synthetic_instruct(kadid, tmp_path / "bad", splits=splits)
    with pytest.raises(ValueError, match=r"no reference for \['val'\]"):
        generate_synthetic_instruct(
            kadid, tmp_path / "bad", splits={**splits, "I01.png": "train", "I04.png": "test"}
        )


def test_default_size_is_fast_and_too_few_references_refused(tmp_path):
    root = write_kadid(tmp_path / "kadid", n_refs=12, n_types=7, n_levels=5)
    start = time.perf_counter()
    out = generate_synthetic_instruct(root, tmp_path / "instruct")
    assert time.perf_counter() - start < 10
    assert len(load(out / QBENCH_FILES["test"])) > 0
    small = write_kadid(tmp_path / "two", n_refs=2)
    with pytest.raises(ValueError, match="at least 3 references"):
        generate_synthetic_instruct(small, tmp_path / "nope")
