"""Q-Bench A1 as Q-Align evaluates it: greedy generation, the option letter matched in the output
(eval_qbench_mcq.py:96-129), accuracy by question type and concern, val on the dev file and test
on the test file; likelihood scoring kept as an option."""

import json
from functools import partial

import pytest
import torch
from torch import nn

from iqa_lightning.data import InstructDataModule
from iqa_lightning.models.scorer import QualityScorer, ScoreOutput
from iqa_lightning.module import IQAModule
from iqa_lightning.tasks import match_letter

from .data.fixtures import write_image

# question, candidates, correct answer, type, concern, the model's known greedy output
QUESTIONS = [
    ("Is the image clear?", ["Yes", "No"], "No", 0, 0, "B"),  # right
    ("How is the lighting?", ["Dim", "Normal", "Bright"], "Bright", 1, 1, "A. Dim"),  # wrong
    ("What is the worst distortion?", ["Noise", "Blur", "Glare", "JPEG"], "Blur", 2, 2,
     "The answer is B."),  # right: Q-Align counts the letter anywhere in the output
    ("How is the sky's colour?", ["Vivid", "Faded"], "Faded", 1, 3, "A"),  # wrong
    ("Is the face in focus?", ["Yes", "No"], "Yes", 0, 1, "sorry, i cannot tell."),  # no letter
]  # fmt: skip
# By hand: 2 of 5 right; yes-or-no 1/2, how 0/2, what 1/1; distortion 1/1, other 0/2,
# in-context distortion 1/1, in-context other 0/1.
EXPECTED = {
    "mcq_acc": 0.4,
    "mcq_acc/type/yes-or-no": 0.5,
    "mcq_acc/type/how": 0.0,
    "mcq_acc/type/what": 1.0,
    "mcq_acc/concern/distortion": 1.0,
    "mcq_acc/concern/other": 0.0,
    "mcq_acc/concern/in-context-distortion": 1.0,
    "mcq_acc/concern/in-context-other": 0.0,
}
# The letter each question's highest letter logit picks (likelihood scoring): 4 of 5 right.
LIKELIHOOD_PICKS = ["A", "C", "B", "B", "A"]


class KnownAnswers(QualityScorer):
    """A scorer whose generated answers and letter logits are known, keyed by the question."""

    tasks = frozenset({"score", "mcq"})

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.generated: list[tuple[list[str], int]] = []

    def score(self, batch):
        return ScoreOutput(batch["pixels"].mean((1, 2, 3)) + self.weight)

    def parameter_groups(self):
        return {"prompt": {"weight": self.weight}}

    def generate(self, pixels, questions, max_new_tokens):
        self.generated.append((list(questions), max_new_tokens))
        return [next(q[5] for q in QUESTIONS if prompt.startswith(q[0])) for prompt in questions]

    def option_logits(self, pixels, prompts):
        logits = torch.zeros(len(prompts), 128)
        for row, prompt in enumerate(prompts):
            index = next(i for i, q in enumerate(QUESTIONS) if prompt.startswith(q[0]))
            logits[row, ord(LIKELIHOOD_PICKS[index])] = 5.0
        return logits

    def letter_id(self, letter):
        return ord(letter)


def write_qbench(root, name):
    records = []
    for index, (question, candidates, answer, kind, concern, _) in enumerate(QUESTIONS):
        write_image(root / "images" / f"{index:05d}.jpg", seed=index)
        records.append({"img_path": f"{index:05d}.jpg", "question": question, "type": kind,
                        "candidates": candidates, "correct_ans": answer, "concern": concern})  # fmt: skip
    (root / name).write_text(json.dumps(records), encoding="utf-8")
    return root / name


def accuracies(tmp_path, answer_by):
    dev = write_qbench(tmp_path / "q-bench", "llvisionqa_dev.json")
    test = write_qbench(tmp_path / "q-bench", "llvisionqa_test.json")
    data = InstructDataModule(
        qbench_val=dev, qbench_test=test, qbench_image_root=tmp_path / "q-bench" / "images", image_size=16, batch_size=2, eval_batch_size=3,
        mcq_answer=answer_by, mcq_max_new_tokens=7,
    )  # fmt: skip
    data.setup("test")
    scorer = KnownAnswers()
    phase = {"name": "s", "trainable": ["prompt"], "optimizer": partial(torch.optim.SGD, lr=1)}
    module = IQAModule(None, None, None, phases=[phase], scorer=scorer)
    for batch in data.test_dataloader()[0]:
        module.test_step(batch, 0)
    return (
        data,
        scorer,
        {k.removeprefix("test/"): float(v) for k, v in module._epoch_metrics("test").items()},
    )


def test_accuracy_by_generation_equals_the_hand_computed_one(tmp_path):
    data, scorer, acc = accuracies(tmp_path, "generate")
    assert acc == pytest.approx(EXPECTED)
    assert [limit for _, limit in scorer.generated] == [7, 7]  # greedy, up to mcq_max_new_tokens
    assert scorer.generated[0][0][0].endswith(
        "Answer with the option's letter from the given choices directly."
    )
    assert data.qbench_file("test").name == "llvisionqa_test.json"
    assert data.qbench_file("val").name == "llvisionqa_dev.json"


def test_likelihood_scoring_stays_an_option(tmp_path):
    _, scorer, acc = accuracies(tmp_path, "likelihood")
    assert acc["mcq_acc"] == pytest.approx(0.8) and not scorer.generated
    assert acc["mcq_acc/type/how"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="instruct.mcq_answer='sample' must be one of"):
        InstructDataModule(qbench_val=tmp_path, mcq_answer="sample")


def test_letters_are_matched_as_q_align_counts_them():
    letters = ["A", "B", "C", "D"]
    assert match_letter("B", letters, 1) == 1
    assert match_letter("  C. Glare\n", letters, 1) == 2  # names another option: that one
    assert match_letter("The answer is D", letters, 3) == 3
    assert match_letter("no idea", letters, 0) == -1
    assert match_letter("A or B", letters, 1) == 1  # Q-Align: the right letter occurs -> right
