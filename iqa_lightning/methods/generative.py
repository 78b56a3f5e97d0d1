"""Generation-based scoring (``method=generative``): the LMM writes its answer and the score is
parsed from it (:class:`~iqa_lightning.models.generation.GenerativeScorer`), as the reasoning
IQA models are read by their authors' inference code.

    python -m iqa_lightning.score images=photos/ model=visualquality_r1 out=scores.csv
    python -m iqa_lightning.score images=photos/ model=q_insight out=scores.csv
    python train.py method=generative experiment=demo        # supervised answers (LoRA)

The checkpoint presets ``model=q_insight`` and ``model=visualquality_r1`` choose their authors'
settings (``method=q_insight`` / ``method=visualquality_r1``: system prompt, question,
sampling, samples per image, answer regex, conf/method/). ``method.generation`` holds them:
``prompt`` (:class:`~iqa_lightning.models.generation.PromptSpec`), ``sampling``
(:class:`~iqa_lightning.models.generation.Sampling`) and ``parser``
(:class:`~iqa_lightning.models.generation.AnswerParser`).

Scoring zero-shot (``python -m iqa_lightning.score``, no ``stage.phases`` in the config) builds
the frozen model with no LoRA. Training (:class:`GenerativeModule`) runs ``method.phases``;
a phase named in ``method.sft_phases`` trains LoRA on supervised answers
(``method.answer_format`` filled with the image's MOS on the answers' scale, ``sft_answers:
mos``, or with a random score, ``sft_answers: random``: the format without the quality, the
warm-up of GRPO on a model that never wrote a number; ``{level}`` in the format writes the
parser's level word nearest to the score, ``method.generation.parser.levels``). Validation and test parse the sampled
answers; the images whose answers did not parse are counted (``<split>/parse_failures``, per
dataset ``<split>/<dataset>/parse_failures`` in a mix) and marked in ``predictions_test.csv``
(``parse_ok``), with the answer, the reasoning and the generated text of each image.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from iqa_lightning.errors import ConfigError
from iqa_lightning.methods import Method, register, stage_one_from, trained_tensors
from iqa_lightning.models.generation import GenerativeScorer
from iqa_lightning.models.prompts import NoPrompt
from iqa_lightning.models.scorer import ScoreOutput
from iqa_lightning.module import IQAModule
from iqa_lightning.run_folder import RunFolder
from iqa_lightning.tasks import task_of

log = logging.getLogger("iqa_lightning")

SFT_ANSWERS = ("mos", "random")
ZERO_SHOT = [{"name": "zero_shot", "trainable": []}]


class GenerativeModule(IQAModule):
    """An :class:`~iqa_lightning.module.IQAModule` scoring through a
    :class:`~iqa_lightning.models.generation.GenerativeScorer`.

    Args:
        backbone, prompt, phases, lora: As :class:`~iqa_lightning.module.IQAModule`.
        generation: ``prompt``, ``sampling`` and ``parser`` settings of the scorer.
        sft_phases: Names of the phases trained on supervised answers.
        sft_answers: ``mos`` (the image's MOS) or ``random`` (a random score: the format only).
        answer_format: The supervised answer, a format string with ``{score}``.
        seed: Seed of the random answers.
        **kwargs: Other :class:`~iqa_lightning.module.IQAModule` arguments.
    """

    hparams_ignore = (*IQAModule.hparams_ignore, "generation")

    def __init__(
        self,
        backbone,
        prompt,
        phases,
        generation: dict[str, Any],
        lora: dict[str, Any] | None = None,
        sft_phases: tuple[str, ...] = (),
        sft_answers: str = "mos",
        answer_format: str = "<answer>{score:.2f}</answer>",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if sft_answers not in SFT_ANSWERS:
            raise ConfigError(
                f"method.sft_answers={sft_answers!r} must be one of {list(SFT_ANSWERS)}"
            )
        try:
            answer_format.format(score=3.0, level="fair")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                f"method.answer_format={answer_format!r} must be a format string of {{score}} "
                f"and / or {{level}} ({err})"
            ) from None
        generation = dict(generation)
        prompt = NoPrompt() if prompt is None else prompt

        def scorer(backbone, prompt, score):
            return GenerativeScorer(backbone, prompt, generation["prompt"],
                                    generation["sampling"], generation["parser"])  # fmt: skip

        super().__init__(backbone, prompt, None, phases, lora=lora, scorer=scorer, **kwargs)
        names = [p.name for p in self.phases]
        unknown = [p for p in sft_phases if p not in names]
        if unknown:
            raise ConfigError(f"method.sft_phases names {unknown}, but the phases are {names}")
        if "{level" in answer_format and not self.scorer.parser.levels:
            raise ConfigError(
                f"method.answer_format={answer_format!r} writes a {{level}} word, but "
                "method.generation.parser.levels is not set (word: score pairs)"
            )
        self.sft_phases = tuple(str(p) for p in sft_phases)
        self.sft_answers = sft_answers
        self.answer_format = answer_format
        self._random = random.Random(seed)
        self.failures: dict[str, Counter] = {"val": Counter(), "test": Counter()}
        self._last: ScoreOutput | None = None

    # ------------------------------------------------------------------ scales
    @property
    def score_range(self) -> tuple[float, float]:
        """``(lo, hi)`` of the answers (the parser's ``score_range``)."""
        return self.scorer.parser.score_range

    def to_answer_scale(self, target: torch.Tensor) -> torch.Tensor:
        """Targets in [0, 1] on the answers' scale."""
        lo, hi = self.score_range
        return lo + target.float() * (hi - lo)

    # ------------------------------------------------------------------ training
    def supervised_answers(self, batch: dict[str, Any]) -> list[str]:
        """The answer each image is trained to write in a supervised phase (``{level}``: the
        parser's level word nearest to the score; random answers then draw a level uniformly)."""
        parser = self.scorer.parser
        if self.sft_answers == "mos":
            values = self.to_answer_scale(batch["target"]).tolist()
        elif parser.levels:
            values = [self._random.choice(list(parser.levels.values())) for _ in batch["target"]]
        else:
            lo, hi = self.score_range
            values = [self._random.uniform(lo, hi) for _ in batch["target"]]
        if "{level" not in self.answer_format:
            return [self.answer_format.format(score=v) for v in values]
        return [self.answer_format.format(score=v, level=parser.level_of(v)) for v in values]

    def sft_step(self, batch: dict[str, Any]) -> torch.Tensor:
        loss = self.scorer.answer_loss(batch, self.supervised_answers(batch))
        self.log("train/loss_answer", loss, batch_size=len(batch["target"]))
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if task_of(batch) != "score":
            raise ConfigError("generation-based methods train on score batches only (method.tasks)")
        if self.phase.name not in self.sft_phases:
            raise ConfigError(
                f"phase {self.phase.name!r} is not in method.sft_phases {list(self.sft_phases)}; "
                "method=generative trains supervised answers only (method=grpo: rewards)"
            )
        loss = self.sft_step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    # ------------------------------------------------------------------ evaluation
    def score_step(self, batch: dict[str, Any], with_loss: bool = True):
        """The scorer's output; the loss is the MSE between the score on [0, 1] (the answers'
        range mapped) and the target."""
        output = self.scorer.score(batch)
        self._last = output
        if not with_loss:
            return output, None
        lo, hi = self.score_range
        unit = (output.scores - lo) / (hi - lo)
        return output, torch.nn.functional.mse_loss(unit, batch["target"].float().to(unit.device))

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        self._last = None
        super()._eval_step(batch, stage)
        if self._last is None:
            return
        ok = self._last.extras["parse_ok"]
        names = batch.get("dataset") or [None] * len(ok)
        for name, parsed in zip(names, ok, strict=True):
            self.failures[stage]["images"] += 1
            self.failures[stage]["failures"] += int(not parsed)
            if name is not None:
                self.failures[stage][f"{name}/images"] += 1
                self.failures[stage][f"{name}/failures"] += int(not parsed)

    def _log_failures(self, stage: str) -> None:
        counts, self.failures[stage] = self.failures[stage], Counter()
        if not counts["images"] or self.trainer.sanity_checking:
            return
        values = {f"{stage}/parse_failures": float(counts["failures"])}
        for key in counts:
            if key.endswith("/failures"):
                values[f"{stage}/{key.removesuffix('/failures')}/parse_failures"] = float(
                    counts[key]
                )
        self.log_dict(values, reduce_fx="sum", sync_dist=True)
        if counts["failures"]:
            self.print(f"{stage}: {counts['failures']} of {counts['images']} answers did not parse "
                       "(parse_ok=False in the predictions)")  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_failures("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_failures("test")


def generation_settings(cfg: Any) -> dict[str, Any]:
    """``method.generation`` as plain containers (``prompt``, ``sampling``, ``parser``)."""
    node = OmegaConf.select(cfg, "method.generation", default=None)
    if node is None:
        raise ConfigError(
            "method.generation is missing: pick method=generative (or a preset of it)"
        )
    settings = OmegaConf.to_container(node, resolve=True)
    missing = [k for k in ("prompt", "sampling", "parser") if k not in settings]
    if missing:
        raise ConfigError(f"method.generation lacks {missing}")
    return settings


def module_arguments(cfg: Any, run: Path | None) -> dict[str, Any]:
    """Backbone, prompt, phases and LoRA of a generation-based module: a zero-shot scoring
    config (no ``stage.phases``) trains nothing and adds no LoRA; a run is rebuilt with its
    ``lora.json``."""
    method = cfg.method
    training = run is not None or OmegaConf.select(cfg, "stage.phases", default=None) is not None
    if run is not None:
        lora_file = RunFolder(run).lora
        lora = json.loads(lora_file.read_text()) if lora_file.exists() else None
    else:
        lora = (
            OmegaConf.to_container(method.lora, resolve=True)
            if training and method.get("lora")
            else None
        )
    return {
        "backbone": instantiate(cfg.model),
        "prompt": instantiate(cfg.prompt),
        "phases": instantiate(method.phases, _convert_="all") if training else ZERO_SHOT,
        "lora": lora,
        "generation": generation_settings(cfg),
        "sft_phases": tuple(method.get("sft_phases") or ()) if training else (),
        "sft_answers": str(method.get("sft_answers", "mos")),
        "answer_format": str(method.get("answer_format", "<answer>{score:.2f}</answer>")),
        "seed": int(cfg.get("seed") or 0),
    }


@register
class Generative(Method):
    """:class:`GenerativeModule`, its settings from ``method`` (conf/method/generative.yaml)."""

    name = "generative"
    module_class: type[GenerativeModule] = GenerativeModule

    def extra_arguments(self, cfg: Any) -> dict[str, Any]:
        """Keyword arguments a subclass's module takes besides :func:`module_arguments`."""
        return {}

    def build_module(self, cfg: Any, run: Path | None = None, datamodule: Any = None):
        arguments = module_arguments(cfg, run)
        init_from = OmegaConf.select(cfg, "stage.init_from", default=None) if run is None else None
        if not init_from:
            return self.module_class(**arguments, **self.extra_arguments(cfg))
        # stage.init_from: start from an earlier run's tuned tensors (GRPO after a warm-up run)
        lora, earlier = stage_one_from(init_from)
        if lora:
            arguments["lora"] = lora
        module = self.module_class(**arguments, **self.extra_arguments(cfg))
        tensors = trained_tensors(module, earlier)
        module.load_tuned(tensors, strict=False)
        log.info("stage.init_from: loaded %d tensors from %s", len(tensors), init_from)
        return module
