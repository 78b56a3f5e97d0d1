"""What a description says: which visual features it reports as impaired, and its polarity.

Used by the grounding analysis (which features a description mentions) and by the instability
analysis (whether a description contradicts the rating that follows it). Perception-then-
inference tuning, arXiv 2512.09555 (https://arxiv.org/abs/2512.09555); the word lists are ours.

Matching rules (both lists): case-insensitive regular expressions, whole words (``\\b`` on each
side); a match is skipped when it is a label (followed by ``:``, as in ``Noise: clean.``) or
negated (one of :data:`NEGATORS` among the three words before it, in the same sentence).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

#: Feature -> expressions of that feature being impaired (a "mention" of the feature).
FEATURE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "blur": (
        r"blur\w*", r"out of focus", r"unfocused", r"defocus\w*", r"pixelat\w*", r"soft",
        r"lacks? (?:sharpness|details?)", r"sharpness (?:is )?(?:low|poor|reduced)",
    ),
    "noise": (r"noise", r"noisy", r"grain\w*", r"speckl\w*"),
    "exposure": (
        r"over-?expos\w*", r"under-?expos\w*", r"too (?:bright|dark)", r"dark\w*", r"dim",
        r"blown[- ]out", r"brightness", r"bright",
    ),
    "colour": (
        r"\w*saturat\w*", r"colou?r cast", r"faded", r"vivid", r"dull colou?rs?",
        r"unnatural(?:ly)? colou?rs?", r"colou?r distortions?",
    ),
    "contrast": (
        r"low contrast", r"contrast (?:is )?(?:low|reduced|poor|weak)", r"flat",
        r"washed[- ]out", r"hazy",
    ),
    "compression": (
        r"jpeg", r"compress\w*", r"artefacts?", r"artifacts?", r"block\w*", r"ringing",
    ),
}  # fmt: skip

#: Words that make a description positive about quality.
POSITIVE_WORDS: tuple[str, ...] = (
    r"sharp", r"clear", r"clean", r"crisp", r"detailed", r"natural", r"well[- ]exposed",
    r"excellent", r"good", r"high quality", r"pleasing", r"balanced", r"fine details?",
)  # fmt: skip
#: Words of an impairment besides the feature keywords.
NEGATIVE_WORDS: tuple[str, ...] = (
    r"bad", r"poor", r"low quality", r"degraded", r"distort\w*", r"obscur\w*", r"unpleasant",
    r"damaged", r"loss of details?", r"unclear",
)  # fmt: skip
#: Qualifiers that make an impairment mild.
MILD_WORDS: tuple[str, ...] = (
    r"slight\w*", r"mild\w*", r"minor", r"barely", r"subtle", r"faint\w*", r"a (?:little|bit)",
)  # fmt: skip
#: Words that negate a match among the three words before it.
NEGATORS: tuple[str, ...] = ("no", "not", "without", "free", "never", "isn't", "aren't", "nor")

_WORDS = re.compile(r"[\w'-]+")


def _compile(patterns: Sequence[str]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + r")\b", re.IGNORECASE)


def _negated(text: str, start: int) -> bool:
    clause = re.split(r"[.;!?\n]", text[:start])[-1]
    return any(w.lower() in NEGATORS for w in _WORDS.findall(clause)[-3:])


def count_hits(text: str, pattern: re.Pattern) -> int:
    """Matches of ``pattern`` in ``text`` that are neither labels nor negated."""
    hits = 0
    for match in pattern.finditer(text):
        if text[match.end() :].lstrip(" \t").startswith(":") or _negated(text, match.start()):
            continue
        hits += 1
    return hits


class FeatureMentions:
    """Which features a description reports as impaired (:data:`FEATURE_KEYWORDS`).

    Args:
        keywords: Feature -> its expressions; None: :data:`FEATURE_KEYWORDS`.

    Raises:
        ValueError: No feature, a feature without expressions, or an expression that is not a
            regular expression; names the feature (``analysis.features.<feature>``).
    """

    def __init__(self, keywords: Mapping[str, Sequence[str]] | None = None) -> None:
        keywords = FEATURE_KEYWORDS if keywords is None else keywords
        if not keywords:
            raise ValueError("analysis.features names no feature")
        self.keywords = {str(k): tuple(str(p) for p in v) for k, v in keywords.items()}
        self.patterns = {}
        for feature, patterns in self.keywords.items():
            if not patterns:
                raise ValueError(f"analysis.features.{feature} lists no expression")
            try:
                self.patterns[feature] = _compile(patterns)
            except re.error as err:
                raise ValueError(f"analysis.features.{feature}: {err}") from None

    @property
    def features(self) -> list[str]:
        return list(self.keywords)

    def __call__(self, text: str) -> list[int]:
        """0/1 per feature (in :attr:`features` order): 1 when the text mentions it."""
        return [int(count_hits(text, self.patterns[f]) > 0) for f in self.features]


_POSITIVE = _compile(POSITIVE_WORDS)
_NEGATIVE = _compile(NEGATIVE_WORDS + tuple(p for v in FEATURE_KEYWORDS.values() for p in v))
_MILD = _compile(MILD_WORDS)


def polarity(text: str) -> int:
    """+1 (positive), -1 (negative) or 0 (neither) for a description.

    An impairment is a match of a :data:`FEATURE_KEYWORDS` expression or of
    :data:`NEGATIVE_WORDS` (labels and negated matches skipped, so ``Noise: clean.`` and
    ``no blur`` are none). Negative: the text states an impairment and no :data:`MILD_WORDS`
    qualifier; 0: it states impairments but also a mild qualifier (``a very slight blur``);
    positive: it states no impairment and at least one :data:`POSITIVE_WORDS` match; 0 when it
    states neither.
    """
    if count_hits(text, _NEGATIVE):
        return 0 if count_hits(text, _MILD) else -1
    return 1 if count_hits(text, _POSITIVE) else 0
