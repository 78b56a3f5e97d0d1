"""Templated text of the synthetic instruction data (see :mod:`.instruct_synthetic`).

Distortion phrases, severity and quality words, and the records they fill: LLaVA-style
conversations (Q-Instruct format) and Q-Bench multiple-choice questions with integer type /
concern codes (0 yes-or-no, 1 how, 2 what; 0 distortion, 1 other; see :mod:`.qbench`).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from ..datasets.synthetic import DISTORTIONS

__all__ = [
    "PAIR_QUESTION",
    "blur_pairs",
    "PHRASES",
    "QUALITY_WORDS",
    "STRENGTHS",
    "conversation_record",
    "image_conversations",
    "image_questions",
    "mcq_record",
    "quality_word",
    "strength_word",
]

PAIRS_PER_REFERENCE = 2
QUALITY_WORDS = ("bad", "poor", "fair", "good", "excellent")
STRENGTHS = ("very slight", "slight", "moderate", "strong", "very strong")
PHRASES = {
    "gaussian_blur": ("blur", "fine details and edges look soft"),
    "gaussian_noise": ("noise", "grainy speckles cover smooth areas"),
    "jpeg": ("JPEG compression artifacts", "blocks and ringing appear around edges"),
    "contrast_reduction": ("low contrast", "the image looks flat and washed out"),
    "brightness_increase": ("overexposure", "bright areas lose their detail"),
    "saturation_increase": ("oversaturated colors", "colors look unnaturally vivid"),
    "pixelation": ("pixelation", "the image breaks into visible square blocks"),
}
TYPES = {
    "yes-or-no": 0,
    "how": 1,
    "what": 2,
}  # Q-Bench codes, see iqa_lightning.data.instruct.qbench
CONCERNS = {"distortion": 0, "other": 1}
WHAT_QUESTIONS = (
    "What kind of distortion affects this image?",
    "Which distortion is the most visible in this image?",
    "What is the main quality problem of this image?",
)
EXPLAIN_QUESTIONS = (
    "Describe the quality of this image and rate it.",
    "How would you rate the quality of this image? Explain why.",
    "Evaluate the image quality and give reasons.",
)
PAIR_QUESTION = (
    "This image shows two versions of the same photo side by side. Which of the two halves "
    "is sharper, the left or the right?"
)


def quality_word(mos: float) -> str:
    """The Q-Align level word of a 1-5 score: five equal bins, bad ... excellent."""
    return QUALITY_WORDS[min(4, max(0, int((float(mos) - 1.0) / 0.8)))]


def strength_word(level: int, levels: int) -> str:
    """Severity word of ``level`` out of ``levels``, spread over the five words."""
    if levels <= 1:
        return STRENGTHS[2]
    return STRENGTHS[round((level - 1) / (levels - 1) * (len(STRENGTHS) - 1))]


def conversation_record(record_id: str, path: str, turns) -> dict:
    """A Q-Instruct / LLaVA record; ``<image>\\n`` opens the first human turn."""
    messages = []
    for position, (question, answer) in enumerate(turns):
        prefix = "<image>\n" if position == 0 else ""
        messages.append({"from": "human", "value": prefix + question})
        messages.append({"from": "gpt", "value": answer})
    return {"id": record_id, "image": path, "conversations": messages}


def image_conversations(stem: str, path: str, image: dict, rng: random.Random) -> list[dict]:
    """Perception dialogue (what distortion, how strong) and quality explanation of an image.

    ``image`` has ``kind`` (a :data:`PHRASES` key), ``strength`` and ``mos`` (1-5).
    """
    phrase, effect = PHRASES[image["kind"]]
    strength, word = image["strength"], quality_word(image["mos"])
    perception = [
        (rng.choice(WHAT_QUESTIONS), f"The image is mainly affected by {phrase}."),
        (f"How strong is the {phrase}?", f"The {phrase} is {strength}."),
    ]
    impact = {
        "very slight": "It barely affects the overall look",
        "slight": "It is noticeable on close inspection but the content stays clear",
        "moderate": "It is clearly visible and reduces the visual appeal",
        "strong": "It dominates the image and hides many details",
        "very strong": "It severely degrades the image and obscures its content",
    }[strength]
    explanation = (
        f"The image shows {strength} {phrase}: {effect}. {impact}. "
        f"Overall, the quality of the image is {word}."
    )
    return [
        conversation_record(f"{stem}-perception", path, perception),
        conversation_record(
            f"{stem}-quality", path, [(rng.choice(EXPLAIN_QUESTIONS), explanation)]
        ),
    ]


def mcq_record(record_id, path, question, candidates, answer, kind, concern) -> dict:
    """A Q-Bench record with integer ``type`` / ``concern`` codes (plus an ``id``)."""
    return {
        "id": record_id,
        "img_path": path,
        "question": question,
        "candidates": list(candidates),
        "correct_ans": answer,
        "type": TYPES[kind],
        "concern": CONCERNS[concern],
    }


def options(rng: random.Random, answer: str, pool, low: int = 2, high: int = 4) -> list[str]:
    """``answer`` and ``low``-``high`` minus one distractors from ``pool``, shuffled."""
    others = [option for option in pool if option != answer]
    count = rng.randint(low, min(high, len(others) + 1))
    chosen = [answer, *rng.sample(others, count - 1)]
    rng.shuffle(chosen)
    return chosen


def image_questions(stem: str, path: str, image: dict, rng: random.Random) -> list[dict]:
    """Yes-or-no, what, severity (how) and overall quality (how, concern other) questions."""
    kinds = [name for name, _ in DISTORTIONS]
    phrase, word = PHRASES[image["kind"]][0], quality_word(image["mos"])
    asked = image["kind"] if rng.random() < 0.5 else rng.choice(
        [kind for kind in kinds if kind != image["kind"]]
    )  # fmt: skip
    yes = "Yes" if asked == image["kind"] else "No"
    what = options(rng, phrase, [PHRASES[kind][0] for kind in kinds])
    table = [  # suffix, question, candidates, answer, type, concern
        ("yesno", f"Does this image show {PHRASES[asked][0]}?", ["Yes", "No"], yes, "yes-or-no",
         "distortion"),
        ("what", "What is the main distortion in this image?", what, phrase, "what", "distortion"),
        ("severity", f"How severe is the {phrase} in this image?",
         options(rng, image["strength"], STRENGTHS, low=3), image["strength"], "how",
         "distortion"),
        ("quality", "How is the overall quality of this image?",
         options(rng, word, QUALITY_WORDS, low=3), word, "how", "other"),
    ]  # fmt: skip
    return [mcq_record(f"{stem}-{suffix}", path, *rest) for suffix, *rest in table]


def blur_pairs(images: list[dict], image_dir: Path, seed: int) -> list[dict]:
    """Up to two pairs of blur levels (0: the pristine reference) per reference, seeded.

    Returns:
        Dicts with ``ref``, ``index`` (1, 2), ``paths`` (left, right), ``sharper`` (``"left"``
        or ``"right"``) and ``answer`` (the sentence answering :data:`PAIR_QUESTION`).
    """
    blurred: dict[str, dict[int, dict]] = {}
    for image in images:
        if image["kind"] == "gaussian_blur":
            blurred.setdefault(image["ref"], {})[image["level"]] = image
    pairs = []
    for ref in sorted(blurred):
        rng = random.Random(f"{seed}/pairs/{ref}")
        files = {level: image_dir / image["file"] for level, image in blurred[ref].items()}
        if (image_dir / ref).is_file():
            files[0] = image_dir / ref
        combos = list(itertools.combinations(sorted(files), 2))
        chosen = rng.sample(combos, min(PAIRS_PER_REFERENCE, len(combos)))
        for index, (sharp, soft) in enumerate(chosen, start=1):
            left, right = (sharp, soft) if rng.random() < 0.5 else (soft, sharp)
            side, other = ("left", "right") if left == sharp else ("right", "left")
            soft_strength = blurred[ref][soft]["strength"]
            if sharp == 0:
                detail = f"the {other} half shows {soft_strength} blur"
            else:
                detail = (
                    f"both halves are blurred, but the {other} half more "
                    f"({soft_strength} versus {blurred[ref][sharp]['strength']} blur)"
                )
            pairs.append(
                {
                    "ref": ref,
                    "index": index,
                    "paths": (files[left], files[right]),
                    "sharper": side,
                    "answer": f"The {side} half is sharper; {detail}.",
                }
            )
    return pairs
