"""Multiple-choice questions about low-level perception, in Q-Bench's (LLVisionQA) JSON format.

Q-Bench (Wu et al., ICLR 2024; huggingface.co/datasets/nanyangtu/LLVisionQA-QBench, files
``llvisionqa_dev.json`` / ``llvisionqa_test.json``) is a JSON list of records ::

    {"img_path": "00079.jpg", "question": "Is the image clear?",
     "candidates": ["Yes", "No"], "correct_ans": "Yes", "type": 0, "concern": 1}

``img_path`` is relative to the image folder. Q-Align evaluates on the test file
(eval_qbench_mcq.py ``--split``; its answers come from a file of the Q-Bench team's, lines
53-65): a test file without ``correct_ans`` is refused with a message naming it.
``type`` and ``concern`` are integer codes; their names follow lmms-eval's Q-Bench task
(``question_list`` / ``concern_list``) and the columns of the Q-Bench leaderboard:

    type:    0 yes-or-no, 1 how, 2 what
    concern: 0 distortion, 1 other, 2 in-context distortion, 3 in-context other

("global" / "local" in lmms-eval are "distortion" / "in-context" in the paper). Names are
accepted too. The prompt follows LLaVA-1.5's and lmms-eval's multiple-choice convention.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from iqa_lightning.errors import InstructFormatError

from ..images import image_to_tensor, load_rgb
from .conversations import (
    Conversation,
    RecordList,
    check_images,
    image_field,
    join_image,
    load_json_list,
    record_id_or,
    record_where,
)

__all__ = [
    "ANSWER_INSTRUCTION",
    "CONCERN_NAMES",
    "MCQ",
    "MCQDataset",
    "TYPE_NAMES",
    "collate_mcq",
    "letters",
    "mcq_prompt",
    "mcq_to_conversation",
    "read_qbench",
]

TYPE_NAMES = ("yes-or-no", "how", "what")
CONCERN_NAMES = ("distortion", "other", "in-context-distortion", "in-context-other")
ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
MIN_CANDIDATES, MAX_CANDIDATES = 2, 26
#: How the model answers (``instruct.mcq_answer``): iqa_lightning.tasks.MCQ_ANSWERING.
ANSWERING = ("generate", "likelihood")
_TYPE_ALIASES = {"yes/no": 0, "yes-no": 0, "yesno": 0}
_CONCERN_ALIASES = {
    "others": 1,
    "global distortion": 0,
    "global others": 1,
    "global other": 1,
    "local distortion": 2,
    "local others": 3,
    "local other": 3,
    "in-context others": 3,
}


@dataclass(frozen=True)
class MCQ:
    """One multiple-choice question about an image.

    Attributes:
        record_id: The record's ``id``, or ``<file stem>/<index>`` when it has none.
        image_path: The image file.
        question: Question text.
        candidates: Answer options in file order.
        answer_index: Index of the correct option; -1 when the file gives no answer.
        type: ``yes-or-no``, ``how`` or ``what``.
        concern: ``distortion``, ``other``, ``in-context-distortion`` or ``in-context-other``.
    """

    record_id: str
    image_path: Path
    question: str
    candidates: list[str]
    answer_index: int
    type: str
    concern: str


def read_qbench(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    on_bad_image: str = "error",
    require_answer: bool = True,
) -> RecordList:
    """Read and validate a Q-Bench multiple-choice file.

    Errors (:class:`~iqa_lightning.errors.InstructFormatError`) name the file, the
    record index and id: missing ``img_path`` / ``question`` / ``candidates`` / ``type`` /
    ``concern``; fewer than 2 or more than 26 candidates; duplicate or empty candidates; a
    ``correct_ans`` that is not one of the candidates; an unknown type or concern code.

    Args:
        json_path: The JSON file (a list of records).
        image_root: Folder the ``img_path`` values are relative to.
        on_bad_image: ``"error"`` or ``"skip"``, as in
            :func:`~iqa_lightning.data.instruct.conversations.read_qinstruct`.
        require_answer: Refuse records without ``correct_ans`` (False keeps them with
            ``answer_index=-1``, e.g. to write predictions for the hidden test set).

    Returns:
        The questions in file order, as a :class:`~iqa_lightning.data.instruct.conversations.RecordList`.
    """
    json_path = Path(json_path)
    questions = []
    for index, record in enumerate(load_json_list(json_path)):
        where = record_where(json_path, index, record)
        image = image_field(record, "img_path", where)
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise InstructFormatError(f"{where}: 'question' must be non-empty text")
        candidates = _candidates(record.get("candidates"), where)
        answer_index = _answer_index(record, candidates, where, require_answer)
        questions.append(
            MCQ(
                record_id=record_id_or(record, f"{json_path.stem}/{index}"),
                image_path=join_image(image_root, image),
                question=question.strip(),
                candidates=candidates,
                answer_index=answer_index,
                type=_code(record, "type", TYPE_NAMES, _TYPE_ALIASES, where),
                concern=_code(record, "concern", CONCERN_NAMES, _CONCERN_ALIASES, where),
            )
        )
    return check_images(json_path, questions, on_bad_image)


def letters(mcq: MCQ) -> list[str]:
    """Option letters of a question: ``["A", "B", ...]``, one per candidate."""
    return [chr(ord("A") + i) for i in range(len(mcq.candidates))]


def mcq_prompt(mcq: MCQ) -> str:
    """The question, its lettered options and the answer instruction, one per line.

    Example: ``"Is the image clear?\\nA. Yes\\nB. No\\nAnswer with the option's letter from
    the given choices directly."``
    """
    options = [
        f"{letter}. {text}" for letter, text in zip(letters(mcq), mcq.candidates, strict=True)
    ]
    return "\n".join([mcq.question, *options, ANSWER_INSTRUCTION])


def mcq_to_conversation(mcq: MCQ) -> Conversation:
    """A one-turn training conversation: :func:`mcq_prompt` answered by the correct letter."""
    if mcq.answer_index < 0:
        raise ValueError(f"question '{mcq.record_id}' has no correct answer to train on")
    return Conversation(
        record_id=mcq.record_id,
        image_path=mcq.image_path,
        turns=[(mcq_prompt(mcq), letters(mcq)[mcq.answer_index])],
    )


class MCQDataset(Dataset):
    """Decodes the image of each question and builds its prompt.

    Items are dicts: ``pixels`` float32 [3, S, S] in [0, 1], ``prompt`` str (see
    :func:`mcq_prompt`), ``letters`` list[str], ``answer_index`` int (-1: unknown), ``type``,
    ``concern`` and ``record_id`` str, and how the model answers: ``answer_by`` (``generate`` or
    ``likelihood``) and ``max_new_tokens`` (:func:`~iqa_lightning.tasks.answer_mcq`).

    Args:
        questions: Questions, e.g. from :func:`read_qbench`.
        image_size: Output height and width.
        answer_by: ``likelihood`` (each option letter's next-token logit) or ``generate``
            (greedy generation, the letter matched as Q-Align's eval_qbench_mcq.py does).
        max_new_tokens: Length limit of a generated answer (Q-Align: 512).
    """

    def __init__(
        self,
        questions: Sequence[MCQ],
        image_size: int,
        answer_by: str = "likelihood",
        max_new_tokens: int = 512,
    ):
        self.questions = list(questions)
        self.image_size = int(image_size)
        if answer_by not in ANSWERING:
            raise ValueError(f"instruct.mcq_answer={answer_by!r} must be one of {list(ANSWERING)}")
        if isinstance(max_new_tokens, bool) or int(max_new_tokens) < 1:
            raise ValueError(f"instruct.mcq_max_new_tokens={max_new_tokens!r} must be >= 1")
        self.answer_by = answer_by
        self.max_new_tokens = int(max_new_tokens)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict:
        mcq = self.questions[index]
        return {
            "pixels": image_to_tensor(load_rgb(mcq.image_path), self.image_size),
            "prompt": mcq_prompt(mcq),
            "letters": letters(mcq),
            "answer_index": mcq.answer_index,
            "type": mcq.type,
            "concern": mcq.concern,
            "record_id": mcq.record_id,
            "answer_by": self.answer_by,
            "max_new_tokens": self.max_new_tokens,
        }


def collate_mcq(items: Sequence[dict]) -> dict:
    """Stack ``pixels``, make ``answer_index`` a LongTensor [B], keep the rest as lists."""
    batch = {key: [item[key] for item in items] for key in items[0] if key != "pixels"}
    batch["pixels"] = torch.stack([item["pixels"] for item in items])
    batch["answer_index"] = torch.tensor(batch["answer_index"], dtype=torch.long)
    return batch


def _candidates(value, where: str) -> list[str]:
    if not isinstance(value, list):
        raise InstructFormatError(f"{where}: 'candidates' must be a list of options")
    if not MIN_CANDIDATES <= len(value) <= MAX_CANDIDATES:
        raise InstructFormatError(
            f"{where}: has {len(value)} candidate(s); a question needs "
            f"{MIN_CANDIDATES} to {MAX_CANDIDATES} (one letter each)"
        )
    candidates = []
    for position, option in enumerate(value):
        if not isinstance(option, str | int | float) or isinstance(option, bool):
            raise InstructFormatError(f"{where}: candidates[{position}] is not text: {option!r}")
        text = str(option).strip()
        if not text:
            raise InstructFormatError(f"{where}: candidates[{position}] is empty")
        if text in candidates:
            raise InstructFormatError(
                f"{where}: duplicate candidate {text!r} (positions {candidates.index(text)} and "
                f"{position})"
            )
        candidates.append(text)
    return candidates


def _answer_index(record: dict, candidates: list[str], where: str, required: bool) -> int:
    if "correct_ans" not in record or record["correct_ans"] is None:
        if required:
            raise InstructFormatError(
                f"{where}: has no 'correct_ans'; accuracy needs the answers (a Q-Bench test "
                "file with them, or instruct.qbench_test=<the dev file>)"
            )
        return -1
    answer = str(record["correct_ans"]).strip()
    if answer not in candidates:
        raise InstructFormatError(
            f"{where}: correct_ans {answer!r} is not among the candidates {candidates}"
        )
    return candidates.index(answer)


def _code(record: dict, key: str, names: tuple, aliases: dict, where: str) -> str:
    if key not in record:
        raise InstructFormatError(f"{where}: has no '{key}' key")
    value = record[key]
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "-")
        if text.replace(" ", "-") in names:
            return text.replace(" ", "-")
        if text in aliases:
            return names[aliases[text]]
    codes = ", ".join(f"{i} {name}" for i, name in enumerate(names))
    raise InstructFormatError(f"{where}: unknown {key} {value!r}; expected one of: {codes}")
