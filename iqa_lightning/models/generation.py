"""Generation-based scoring: the LMM writes an answer (``<think>...</think><answer>3.85</answer>``)
and the score is parsed from it, as the reasoning IQA models (Q-Insight, VisualQuality-R1) are
read by their authors' inference code.

- :class:`PromptSpec`: the system prompt, the question and where the image goes in the user
  turn (:func:`render_prompt` lays it out in the family's chat format);
- :class:`Sampling`: the ``generate`` settings (sampling or greedy, temperature, top-k, top-p,
  length) and how many answers per image are drawn (``num_samples``; their parsed scores are
  averaged);
- :class:`AnswerParser`: the regex that finds the answer and the number in it (or, with
  ``levels``, the level word in it mapped to its score); a text it cannot read is a parse
  failure (counted, kept, scored by the ``failure`` rule);
- :class:`GenerativeScorer`: a :class:`~iqa_lightning.models.scorer.QualityScorer` that
  generates in batches (prompts left-padded), parses, and keeps the texts per image as extras
  (``answer``, ``parse_ok``, ``parsed_samples``, ``explanation``, ``text``), which land as
  columns of ``predictions_test.csv``. :meth:`GenerativeScorer.rollout` and
  :meth:`GenerativeScorer.token_logps` are what GRPO trains through.

Images reach the model as the backbone's fixed square (``model.image_size``, after any pixel
prompt); a batch that carries ``images`` (a list of ``[3, H, W]`` tensors in [0, 1] at their own
sizes) goes through a Qwen2-VL family backbone at its native resolution instead
(:mod:`iqa_lightning.models.native_resolution`, ``model.min_pixels`` / ``model.max_pixels``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from iqa_lightning.errors import ConfigError
from iqa_lightning.models.lora import language_model_parameters, lora_parameters
from iqa_lightning.models.native_resolution import NativeResolution
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.scorer import QualityScorer, ScoreOutput, declared_parameters, prefixed

#: Qwen2-VL's default system message (what its chat template writes when none is given).
QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."
FAILURES = ("midpoint", "random", "nan")
OCCURRENCES = ("first", "last")


@dataclass
class PromptSpec:
    """What the model is asked.

    Attributes:
        question: The user's text.
        system: The system message (None: the family's default). Qwen2-VL family only.
        image_first: The image before the question in the user turn (False: after it).
        vision_id: ``Picture 1: `` before the image (Qwen's ``add_vision_id=True``).
    """

    question: str
    system: str | None = None
    image_first: bool = True
    vision_id: bool = False


def render_prompt(backbone: nn.Module, spec: PromptSpec, placeholder: str) -> str:
    """The prompt text of one image (``placeholder``: its image tokens), ending where the
    assistant's answer starts.

    Qwen2-VL / Qwen2.5-VL: ChatML as the processor's chat template writes it. Other families:
    the backbone's own template (image first, its own system text).

    Raises:
        ConfigError: A system message, the image after the question or a vision id asked of a
            family whose template has no place for them.
    """
    if backbone.family == "qwen2_vl":
        system = QWEN_DEFAULT_SYSTEM if spec.system is None else spec.system
        image = ("Picture 1: " if spec.vision_id else "") + (
            f"<|vision_start|>{placeholder}<|vision_end|>"
        )
        user = image + spec.question if spec.image_first else spec.question + image
        return (
            f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    asked = [
        key
        for key, value in (("system", spec.system is not None),
                           ("image_first", not spec.image_first), ("vision_id", spec.vision_id))
        if value
    ]  # fmt: skip
    if asked:
        raise ConfigError(
            f"method.generation.prompt.{asked[0]} is set, but the {backbone.family} chat "
            "template has no place for it (Qwen2-VL family only); leave it at its default"
        )
    t = backbone.template
    return t.system + t.first_user.format(image=placeholder, question=spec.question)


@dataclass
class Sampling:
    """``generate`` settings and the number of answers drawn per image.

    Attributes:
        do_sample: Sample (True) or greedy (False).
        temperature, top_k, top_p: Sampling settings; None leaves the checkpoint's
            ``generation_config.json`` value (what the authors' scripts get for a key they do
            not pass).
        max_new_tokens: Length limit of an answer.
        num_samples: Answers per image; the parsed scores are averaged.
    """

    do_sample: bool = True
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 256
    num_samples: int = 1

    def __post_init__(self) -> None:
        if int(self.max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if int(self.num_samples) < 1:
            raise ConfigError(f"num_samples={self.num_samples} must be >= 1")
        if self.temperature is not None and self.do_sample and float(self.temperature) <= 0:
            raise ConfigError(
                f"temperature={self.temperature} must be > 0 when sampling (do_sample=false: greedy)"
            )

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``model.generate`` (only the keys set)."""
        kwargs: dict[str, Any] = {"do_sample": bool(self.do_sample),
                                  "max_new_tokens": int(self.max_new_tokens)}  # fmt: skip
        if self.do_sample:
            for key in ("temperature", "top_k", "top_p"):
                if getattr(self, key) is not None:
                    kwargs[key] = getattr(self, key)
        else:  # greedy: no sampling keys, whatever the checkpoint's generation config says
            kwargs.update(temperature=None, top_k=None, top_p=None)
        return kwargs


@dataclass
class Parsed:
    """One answer read: ``score`` (None: a parse failure), the answer text the number was
    looked for in, and the reasoning (the ``<think>`` text, else empty)."""

    score: float | None
    answer: str
    explanation: str


@dataclass
class AnswerParser:
    """Reads the score from a generated text.

    Attributes:
        answer_pattern: Regex whose group 1 is the answer (``<answer>(.*?)</answer>``; DOTALL).
        occurrence: ``first`` or ``last`` answer match.
        fallback_to_text: Without an answer match, look for the number in the whole text
            (VisualQuality-R1); False: a failure (Q-Insight).
        number_pattern: Regex of the number inside the answer.
        number_group: Its group holding the number (0: the whole match).
        think_pattern: Regex whose group 1 is the reasoning (the explanation kept per image).
        failure: Score of an image none of whose answers parsed: ``midpoint`` of
            ``score_range``, ``random`` (an integer in ``score_range`` drawn from a generator
            seeded with ``seed``, as VisualQuality-R1's ``random.randint(1, 5)``) or ``nan``.
        score_range: ``[lo, hi]`` of the answers (the question's scale).
        seed: Seed of the ``random`` failure rule.
        levels: Answer words and their scores (e.g. ``{excellent: 5, good: 4, fair: 3, poor: 2,
            bad: 1}``): the first of these words in the answer (whole word, any case) gives the
            score instead of a number; None: the number. For a model that writes words it knows
            more readily than digits (the trained tiny LMM); the values must lie in
            ``score_range``.
    """

    answer_pattern: str = r"<answer>(.*?)</answer>"
    occurrence: str = "first"
    fallback_to_text: bool = False
    number_pattern: str = r"-?\d+(?:\.\d+)?"
    number_group: int = 0
    think_pattern: str = r"<think>(.*?)</think>"
    failure: str = "midpoint"
    score_range: Sequence[float] = (1.0, 5.0)
    seed: int = 1
    levels: dict[str, float] | None = None
    _rng: random.Random = field(init=False, repr=False)
    _level_re: re.Pattern | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.occurrence not in OCCURRENCES:
            raise ConfigError(f"parser.occurrence={self.occurrence!r} must be first or last")
        if self.failure not in FAILURES:
            raise ConfigError(f"parser.failure={self.failure!r} must be one of {list(FAILURES)}")
        lo, hi = (float(x) for x in self.score_range)
        if not lo < hi:
            raise ConfigError(
                f"parser.score_range={list(self.score_range)} must be [lo, hi], lo < hi"
            )
        self.score_range = (lo, hi)
        for key in ("answer_pattern", "number_pattern", "think_pattern"):
            try:
                re.compile(getattr(self, key))
            except re.error as err:
                raise ConfigError(f"parser.{key}={getattr(self, key)!r}: {err}") from None
        self._rng = random.Random(self.seed)
        if self.levels is not None:
            self._check_levels()

    def _check_levels(self) -> None:
        if not self.levels:
            raise ConfigError("parser.levels is empty: give word: score pairs, or null")
        levels = {}
        for word, value in dict(self.levels).items():
            if not re.fullmatch(r"\w+", str(word)):
                raise ConfigError(f"parser.levels: {word!r} is not one word")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"parser.levels.{word}={value!r} is not a number") from None
            lo, hi = self.score_range
            if not lo <= value <= hi:
                raise ConfigError(
                    f"parser.levels.{word}={value} lies outside parser.score_range [{lo}, {hi}]"
                )
            levels[str(word).lower()] = value
        self.levels = levels
        words = "|".join(sorted(map(re.escape, levels), key=len, reverse=True))
        self._level_re = re.compile(rf"\b({words})\b", re.IGNORECASE)

    def level_of(self, score: float) -> str:
        """The level word whose score is nearest to ``score`` (the first listed on a tie).

        Raises:
            ConfigError: The parser has no ``levels``.
        """
        if not self.levels:
            raise ConfigError(
                "an answer with {level} needs method.generation.parser.levels (word: score)"
            )
        return min(self.levels, key=lambda word: abs(self.levels[word] - score))

    def parse(self, text: str) -> Parsed:
        answers = re.findall(self.answer_pattern, text, re.DOTALL)
        thoughts = re.findall(self.think_pattern, text, re.DOTALL)
        explanation = thoughts[-1].strip() if thoughts else ""
        if answers:
            found = answers[0] if self.occurrence == "first" else answers[-1]
            answer = (found if isinstance(found, str) else found[0]).strip()
        elif self.fallback_to_text:
            answer = text.strip()
        else:
            return Parsed(None, "", explanation)
        if self._level_re is not None:
            word = self._level_re.search(answer)
            if word is None:
                return Parsed(None, answer, explanation)
            return Parsed(self.levels[word.group(1).lower()], answer, explanation)
        match = re.search(self.number_pattern, answer)
        if match is None:
            return Parsed(None, answer, explanation)
        try:
            return Parsed(float(match.group(self.number_group)), answer, explanation)
        except (ValueError, IndexError):  # "3.5.1" matched by [\d\.]+
            return Parsed(None, answer, explanation)

    def failure_score(self) -> float:
        lo, hi = self.score_range
        if self.failure == "midpoint":
            return (lo + hi) / 2
        if self.failure == "random":
            return float(self._rng.randint(int(lo), int(hi)))
        return float("nan")


@dataclass
class Rollout:
    """Answers drawn for a batch: ``n`` per image, image-major (image 0's first).

    Attributes:
        texts: ``[B * n]`` decoded answers.
        prompt_ids, prompt_mask: ``[B * n, P]`` left-padded prompts.
        completion_ids: ``[B * n, C]`` generated ids (padding after the end).
        completion_mask: ``[B * n, C]`` 1 up to and including the first end-of-answer token.
        image_inputs: The model's image keyword arguments for the ``B * n`` sequences.
        n: Answers per image.
    """

    texts: list[str]
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    image_inputs: dict[str, torch.Tensor]
    n: int


def completion_mask(ids: torch.Tensor, end_ids: Sequence[int]) -> torch.Tensor:
    """``[N, C]`` 1 up to and including each row's first end token (all ones without one)."""
    is_end = torch.isin(ids, torch.tensor(list(end_ids), device=ids.device))
    first = torch.where(is_end.any(1), is_end.int().argmax(1), ids.shape[1])
    return (torch.arange(ids.shape[1], device=ids.device)[None] <= first[:, None]).long()


class GenerativeScorer(QualityScorer):
    """Scores parsed from generated answers.

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone`.
        prompt: A pixel prompt (or :class:`NoPrompt`) applied to the square pixels.
        question: :class:`PromptSpec` (or its keyword arguments).
        sampling: :class:`Sampling` (or its keyword arguments) used to score.
        parser: :class:`AnswerParser` (or its keyword arguments).
        native: :class:`~iqa_lightning.models.native_resolution.NativeResolution` settings
            (``min_pixels`` / ``max_pixels``) for batches that carry ``images``; None: the
            backbone's square only.
    """

    tasks = frozenset({"score"})

    def __init__(
        self,
        backbone: nn.Module,
        prompt: nn.Module | None,
        question: PromptSpec | dict,
        sampling: Sampling | dict,
        parser: AnswerParser | dict,
        native: NativeResolution | None = None,
    ) -> None:
        super().__init__()
        if getattr(prompt, "group", "prompt") == "prompter":
            raise ConfigError("generation-based scoring takes a pixel prompt or prompt=none")
        self.backbone = backbone
        self.prompt = prompt if prompt is not None else NoPrompt()
        self.question = question if isinstance(question, PromptSpec) else PromptSpec(**question)
        self.sampling = sampling if isinstance(sampling, Sampling) else Sampling(**sampling)
        self.parser = parser if isinstance(parser, AnswerParser) else AnswerParser(**parser)
        self.native = native if native is not None else getattr(backbone, "native", None)
        render_prompt(backbone, self.question, "")  # a template error now, not mid-run

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        groups = {
            "prompt": prefixed("prompt", declared_parameters(self.prompt)),
            "lora": prefixed("backbone", lora_parameters(self.backbone)),
            # full-parameter tuning of the decoder (GRPO as the references run it)
            "language_model": prefixed("backbone", language_model_parameters(self.backbone)),
        }
        return {name: params for name, params in groups.items() if params}

    # ------------------------------------------------------------------ inputs
    def _placeholder(self, tokens: int) -> str:
        image_token = self.backbone.tokenizer.convert_ids_to_tokens(self.backbone.image_token_id)
        return image_token * tokens

    def inputs(self, batch: dict[str, Any], n: int = 1) -> tuple[list[str], dict[str, Any]]:
        """Prompt texts and image keyword arguments of a batch, each image repeated ``n``
        times (image-major)."""
        images = batch.get("images")
        if images is not None and self.native is not None:
            grids, image_inputs = self.native.pixel_inputs(self.backbone, list(images), n)
            tokens = [self.native.image_tokens(self.backbone, grid) for grid in grids]
            texts = [render_prompt(self.backbone, self.question, self._placeholder(t))
                     for t in tokens for _ in range(n)]  # fmt: skip
            return texts, image_inputs
        pixels = self.prompt(batch["pixels"])
        if n > 1:
            pixels = pixels.repeat_interleave(n, dim=0)
        text = render_prompt(
            self.backbone, self.question, self._placeholder(self.backbone.num_placeholders)
        )
        return [text] * pixels.shape[0], {"pixels": pixels}

    def _image_kwargs(self, image_inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "pixels" in image_inputs:
            return self.backbone.pixel_inputs(image_inputs["pixels"])
        return dict(image_inputs)

    def _device(self) -> torch.device:
        return self.backbone.lm_head().weight.device

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask ``[N, P]`` of prompt texts."""
        tokenizer = self.backbone.tokenizer
        tokenizer.padding_side = "left"
        enc = tokenizer(list(texts), return_tensors="pt", padding=True)
        device = self._device()
        return enc.input_ids.to(device), enc.attention_mask.to(device)

    def end_ids(self) -> list[int]:
        """Ids that end an answer: the tokenizer's and the checkpoint's end-of-sequence ids."""
        ids = {self.backbone.tokenizer.eos_token_id}
        configured = getattr(self.backbone.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        return sorted(int(i) for i in ids if i is not None)

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(
        self, batch: dict[str, Any], n: int = 1, sampling: Sampling | None = None
    ) -> Rollout:
        """``n`` answers per image of a batch (batched ``generate``, prompts left-padded)."""
        sampling = sampling or self.sampling
        texts, image_inputs = self.inputs(batch, n)
        ids, mask = self.encode(texts)
        out = self.backbone.model.generate(
            input_ids=ids,
            attention_mask=mask,
            **sampling.generate_kwargs(),
            pad_token_id=self.backbone.tokenizer.pad_token_id,
            **{
                k: v for k, v in self.backbone.text_inputs(ids, mask).items() if k != "position_ids"
            },
            **self._image_kwargs(image_inputs),
        )
        completion = out[:, ids.shape[1] :]
        decoded = self.backbone.tokenizer.batch_decode(completion, skip_special_tokens=True)
        return Rollout(
            texts=[t.strip() for t in decoded],
            prompt_ids=ids,
            prompt_mask=mask,
            completion_ids=completion,
            completion_mask=completion_mask(completion, self.end_ids()),
            image_inputs=image_inputs,
            n=n,
        )

    def generate_texts(self, batch: dict[str, Any], n: int) -> list[str]:
        """``n`` answers per image, image-major (what :meth:`score` parses)."""
        return self.rollout(batch, n).texts

    def score(self, batch: dict[str, Any]) -> ScoreOutput:
        n = int(self.sampling.num_samples)
        texts = self.generate_texts(batch, n)
        return self.read(texts, n)

    def read(self, texts: Sequence[str], n: int) -> ScoreOutput:
        """The :class:`ScoreOutput` of ``n`` answers per image: the mean of the parsed scores;
        an image none of whose answers parsed is a failure (``parse_ok`` False) scored by the
        parser's ``failure`` rule."""
        if len(texts) % n:
            raise ValueError(f"{len(texts)} answers are not {n} per image")
        scores, extras = [], {"answer": [], "parse_ok": [], "parsed_samples": [],
                              "explanation": [], "text": []}  # fmt: skip
        for i in range(0, len(texts), n):
            group = [self.parser.parse(t) for t in texts[i : i + n]]
            values = [p.score for p in group if p.score is not None]
            ok = bool(values)
            scores.append(sum(values) / len(values) if ok else self.parser.failure_score())
            extras["answer"].append(" | ".join(p.answer for p in group))
            extras["parse_ok"].append(ok)
            extras["parsed_samples"].append(len(values))
            extras["explanation"].append(next((p.explanation for p in group if p.explanation), ""))
            extras["text"].append(" ||| ".join(texts[i : i + n]))
        device = self._device()
        return ScoreOutput(torch.tensor(scores, dtype=torch.float32, device=device), extras=extras)

    # ------------------------------------------------------------------ training
    def token_logps(self, rollout: Rollout) -> torch.Tensor:
        """``[B * n, C]`` fp32 log-probabilities of the completion tokens under the current
        weights (with gradients where the trained parameters have them)."""
        ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
        image_inputs = rollout.image_inputs
        if "pixels" in image_inputs:
            out = self.backbone._forward(image_inputs["pixels"], ids, mask,
                                         logits_to_keep=ids.shape[1] - rollout.prompt_ids.shape[1] + 1)  # fmt: skip
        else:
            out = self.backbone.model(
                input_ids=ids, attention_mask=mask, use_cache=False,
                logits_to_keep=ids.shape[1] - rollout.prompt_ids.shape[1] + 1,
                **self.backbone.text_inputs(ids, mask), **image_inputs,
            )  # fmt: skip
        logits = out.logits[:, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, rollout.completion_ids[..., None])[..., 0]

    def answer_loss(self, batch: dict[str, Any], answers: Sequence[str]) -> torch.Tensor:
        """Next-token cross-entropy of a given answer per image (and its end token) after the
        prompt: supervised answers (the format warm-up, or SFT on the scores)."""
        texts, image_inputs = self.inputs(batch, 1)
        tokenizer, end = self.backbone.tokenizer, self.end_ids()[0]
        prompts = [tokenizer(t).input_ids for t in texts]
        replies = [tokenizer(a, add_special_tokens=False).input_ids + [end] for a in answers]
        encoded = [(p + r, [-100] * len(p) + r) for p, r in zip(prompts, replies, strict=True)]
        ids, mask, labels = self.backbone.pad_conversations(encoded)
        device = self._device()
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        if "pixels" in image_inputs:
            return self.backbone.lm_loss(image_inputs["pixels"], ids, mask, labels)
        out = self.backbone.model(input_ids=ids, attention_mask=mask, use_cache=False,
                                  **self.backbone.text_inputs(ids, mask), **image_inputs)  # fmt: skip
        logits = out.logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )


__all__ = [
    "AnswerParser",
    "GenerativeScorer",
    "Parsed",
    "PromptSpec",
    "Rollout",
    "Sampling",
    "completion_mask",
    "render_prompt",
]
