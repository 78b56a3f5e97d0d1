"""Perception-then-inference two-stage tuning (arXiv 2512.09555).

Stage 1 (perception) tunes LoRA to describe an image's basic visual features; stage 2
(inference) rates quality from that description, with or without the image. The pieces:

- :mod:`.descriptions`: ground-truth descriptions by image id (synthetic set, Q-Instruct);
- :mod:`.prompts`: the inference prompt and its image / question / description token spans;
- :mod:`.describe`: greedy descriptions of a batch;
- :mod:`.scorer`: :class:`DescriptionScorer`, scores read after a description;
- :mod:`.module`: :class:`PerceptionInferenceModule`, the phases' training objectives.
"""

from iqa_lightning.perception.describe import describe
from iqa_lightning.perception.descriptions import (
    DescriptionError,
    QInstructDescriptions,
    SyntheticDescriptions,
)
from iqa_lightning.perception.prompts import (
    DESCRIPTION_LEAD,
    InferenceBatch,
    InferencePrompt,
    inference_batch,
    inference_prompt,
)
from iqa_lightning.perception.scorer import DescriptionScorer

__all__ = [
    "DESCRIPTION_LEAD",
    "DescriptionError",
    "DescriptionScorer",
    "InferenceBatch",
    "InferencePrompt",
    "QInstructDescriptions",
    "SyntheticDescriptions",
    "describe",
    "inference_batch",
    "inference_prompt",
]
