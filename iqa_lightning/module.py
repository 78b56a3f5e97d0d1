"""The LightningModule: a frozen LMM, the parts being tuned, the losses and the metrics.

Data flow of a score step (see DESIGN.md)::

    pixels [B,3,R,R] in [0,1] -> pixel prompt -> backbone (normalise, vision tower
    -> [Q-Adapt prompter on the features] -> projector -> LM [+ LoRA]) -> next-token logits
    -> WordScore (fp32 log-softmax over quality words) -> score [B] -> MSE vs target [B]

Instruction batches train the same model with next-token cross-entropy on the answers, and
multiple-choice batches are answered by greedy generation matched against the option letters or
by the likelihood of each option's letter (:mod:`tasks`).

Scoring goes through a :class:`~iqa_lightning.models.scorer.QualityScorer`, a child module
(``module.scorer``; :class:`~iqa_lightning.models.scorer.LMMWordScorer` by default) that owns the
backbone and the tuned parts: ``scorer.score(batch)`` gives a
:class:`~iqa_lightning.models.scorer.ScoreOutput`, and the loss (``module.loss``, a
:class:`~iqa_lightning.models.losses.ScoreLoss`) reads it. The module never reaches into the
scorer beyond that contract, and the scorer never reaches back. Tensor names in checkpoints and
``tuned.safetensors`` are the scorer's own (``backbone.*``, ``prompt.*``, ...).

Trainable parameters are an explicit contract: each part declares its parameter group and its
parameters (``group`` and ``trainable_parameters()`` of prompts and prompters, LoRA through
:func:`~iqa_lightning.models.lora.lora_parameters`, the projector through
:meth:`Backbone.projector`); :meth:`IQAModule.parameter_groups` collects them. A run is a
:class:`~iqa_lightning.phases.PhasePlan` (``stage.phases``), each phase naming the groups it
trains, with its own optimiser; the :class:`~iqa_lightning.callbacks.StageSchedule` callback
switches phases.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from iqa_lightning.metrics import correlation_metrics
from iqa_lightning.models.lora import add_lora
from iqa_lightning.models.losses import ScoreLoss, make_loss, target_distribution
from iqa_lightning.models.score import WordScore
from iqa_lightning.models.scorer import LMMWordScorer, QualityScorer, ScoreOutput
from iqa_lightning.phases import Phase, PhasePlan
from iqa_lightning.tasks import MCQTally, answer_mcq, task_of

#: Parameter groups built by the run rather than loaded with the pretrained backbone: saved
#: with the tuned tensors whether a phase trains them or not.
BUILT_GROUPS = ("lora", "prompt", "prompter")
#: The scorer's attribute name, before its parameter names inside this module.
SCORER = "scorer."

log = logging.getLogger(__name__)


def _unwrapped(name: str) -> str:
    """A parameter name without the segments FSDP and activation checkpointing wrappers add."""
    for segment in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):
        name = name.replace(segment, "")
    return name


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collect every rank's rows, keeping one row per image (DistributedSampler pads by repeats).

    A collective under DDP: every rank must call it.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(parts, rows)
        rows = [row for part in parts for row in part]
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["image_id"], row)
    return list(unique.values())


def _plain(value: Any) -> Any:
    """Config containers (OmegaConf) as plain Python, for JSON and ``weights_only`` loads; an
    object (a loss given as ``module.loss._target_``) by its class's import path."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"{type(value).__module__}.{type(value).__qualname__}"


class IQAModule(L.LightningModule):
    """Tune prompts, prompters and LoRA on a frozen LMM for quality scoring and perception.

    Args:
        backbone: A :class:`~iqa_lightning.models.backbones.Backbone` (frozen).
        prompt: A pixel prompt (``group = "prompt"``), :class:`NoPrompt`, a feature prompter
            (``group = "prompter"``), or a callable taking ``backbone=`` that builds one (Hydra
            ``_partial_``).
        score: The :class:`~iqa_lightning.models.score.WordScore` head.
        phases: :class:`~iqa_lightning.phases.Phase` s or one dict per phase (``stage.phases``):
            ``name``, ``trainable`` (group names; ``prompt`` also selects a feature prompter),
            ``epochs`` (None: until the end), ``optimizer`` (``params -> Optimizer``), optional
            ``scheduler`` (called as the :mod:`~iqa_lightning.phases` contract says),
            ``warmup_ratio``, ``scheduler_interval``, ``lr`` (per-group learning rates).
        lora: ``add_lora`` keyword arguments, or None for no LoRA.
        task_weights: Loss weight per training task (``score``, ``instruct``).
        loss: A :class:`~iqa_lightning.models.losses.ScoreLoss` or its name
            (:data:`~iqa_lightning.models.losses.LOSSES`): ``mse``, ``l1`` or ``smooth_l1``
            between score and target; ``level_ce`` (Q-Align: cross-entropy on each image's level
            word) or ``soft_label`` (DeQA-Score: KL to the level distribution of its score and
            rating std, or of its rating histogram), which need a score head of 5 level words,
            best first.
        levels: :class:`~iqa_lightning.models.levels.LevelTargets` keyword arguments
            (``module.levels``) of a level loss named by ``loss``: ``range``, ``density``,
            ``min_std``, ``max_shift``, ``std``, ``softmax``.
        scorer: ``(backbone, prompt, score) -> QualityScorer`` (e.g. a ``functools.partial``
            of a :class:`~iqa_lightning.models.scorer.LMMWordScorer` subclass), or a built
            :class:`~iqa_lightning.models.scorer.QualityScorer`; None: an
            :class:`~iqa_lightning.models.scorer.LMMWordScorer`.
    """

    #: Constructor arguments kept out of ``hparams`` (modules and objects, not plain values).
    hparams_ignore: tuple[str, ...] = ("backbone", "prompt", "score", "phases", "scorer")

    def __init__(
        self,
        backbone: nn.Module,
        prompt: nn.Module | Any,
        score: WordScore,
        phases: Sequence[Phase | dict[str, Any]],
        lora: dict[str, Any] | None = None,
        task_weights: dict[str, float] | None = None,
        loss: str | ScoreLoss = "mse",
        levels: dict[str, Any] | None = None,
        scorer: Any = None,
    ) -> None:
        super().__init__()
        self.loss = make_loss(loss, levels)
        self.plan = PhasePlan(phases)
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        if not isinstance(scorer, QualityScorer):
            if lora:
                add_lora(backbone, **lora)
            if isinstance(prompt, functools.partial) or not isinstance(prompt, nn.Module):
                prompt = prompt(backbone=backbone)
            scorer = (scorer or LMMWordScorer)(backbone, prompt, score)
        self.scorer = scorer
        self.loss.check(scorer)
        self.task_weights = {"score": 1.0, "instruct": 1.0, **(task_weights or {})}
        self.val_metrics = correlation_metrics("val/")
        self.test_metrics = correlation_metrics("test/")
        self.mcq = {"val": MCQTally(), "test": MCQTally()}
        self.best_val = {"val/srcc_best": float("-inf")}
        self.test_rows: list[dict[str, Any]] = []
        # Checkpoints hold the tuned parameters only; loading them leaves the rest as built.
        self.strict_loading = False
        # Tuned: every group some phase trains, plus every group built here rather than loaded
        # with the pretrained backbone (LoRA, a pixel prompt, a prompter), trained or not: a
        # part drawn at random and applied must be saved, or each rebuild draws it anew.
        tuned = {g for p in self.plan for g in self._resolve(p.trainable)}
        built = {g for g in self.parameter_groups() if g in BUILT_GROUPS}
        self.trained_groups = sorted(tuned | ({"lora"} if lora else set()))
        self.tuned_groups = sorted(tuned | built | ({"lora"} if lora else set()))
        self.lora_config = _plain(lora) if lora else None
        self.set_phase(0)

    # ------------------------------------------------------------ the scorer's parts
    @property
    def backbone(self) -> nn.Module | None:
        """The scorer's backbone (None for a scorer without one)."""
        return getattr(self.scorer, "backbone", None)

    @property
    def prompt(self) -> nn.Module | None:
        """The scorer's pixel prompt."""
        return getattr(self.scorer, "prompt", None)

    @property
    def prompter(self) -> nn.Module | None:
        """The scorer's feature prompter (None without one)."""
        return getattr(self.scorer, "prompter", None)

    @property
    def score(self) -> WordScore | None:
        """The scorer's word-score head (None for a scorer that reads no words)."""
        return self.scorer.word_head

    # ------------------------------------------------------------ parameter groups
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Every tunable part's declared parameters by group name, as ``{name: parameter}``
        (names relative to the scorer: the names of saved tensors)."""
        return {
            name: {_unwrapped(n): p for n, p in params.items()}
            for name, params in self.scorer.parameter_groups().items()
        }

    def _resolve(self, names: Sequence[str]) -> list[str]:
        groups = self.parameter_groups()
        # "prompt" names whichever prompt the run has: pixel prompt or feature prompter.
        resolved = [
            "prompter" if n == "prompt" and "prompt" not in groups and "prompter" in groups else n
            for n in names
        ]
        unknown = [n for n in resolved if n not in groups]
        if unknown:
            raise ValueError(
                f"stage.phases trains {unknown}, but this model's parameter groups are "
                f"{sorted(groups)} (prompt=none has no prompt; LoRA needs stage.lora)"
            )
        return resolved

    def set_trainable(self, names: Sequence[str]) -> None:
        """Train exactly the named groups; everything else, the backbone included, is frozen."""
        resolved = self._resolve(names)
        groups = self.parameter_groups()
        self.requires_grad_(False)
        for name in resolved:
            for param in groups[name].values():
                param.requires_grad_(True)
        self.trainable_groups = resolved

    def set_phase(self, index: int) -> None:
        """Make phase ``index`` current: its groups train, all others are frozen."""
        self.phase_index = index
        self.set_trainable(self.plan[index].trainable)

    @property
    def phases(self) -> list[Phase]:
        """The run's phases, in order (:attr:`plan`)."""
        return self.plan.phases

    @property
    def phase(self) -> Phase:
        return self.plan[self.phase_index]

    def phase_for_epoch(self, epoch: int) -> int:
        """The phase an epoch belongs to (:meth:`PhasePlan.index_for_epoch`)."""
        return self.plan.index_for_epoch(epoch)

    def state_of(self, groups: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tensors of the named groups by full name, detached on CPU."""
        all_groups = self.parameter_groups()
        return {n: p.detach().cpu().contiguous() for g in groups for n, p in all_groups[g].items()}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The current phase's trainable tensors (``checkpoints/<phase>/trainable.safetensors``)."""
        return self.state_of(self.trainable_groups)

    def tuned_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor any phase tunes (what checkpoints and ``tuned.safetensors`` hold)."""
        return self.state_of(self.tuned_groups)

    def load_tuned(self, tensors: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load tuned tensors by full name.

        Args:
            tensors: Name -> tensor, e.g. from ``tuned.safetensors``.
            strict: Every tuned tensor of this module must be present.

        Raises:
            KeyError: A tensor is missing (strict) or a name matches no parameter.
        """
        params = {_unwrapped(n) for n, _ in self.scorer.named_parameters()}
        unknown = sorted(set(tensors) - params)
        missing = self.missing_tuned(tensors, "tuned tensors") if strict else []
        if missing or unknown:
            raise KeyError(f"tuned tensors: missing {missing[:5]}, unknown {unknown[:5]}")
        self.scorer.load_state_dict(tensors, strict=False)

    def missing_tuned(self, tensors: dict[str, Any], what: str) -> list[str]:
        """Tuned tensors that ``tensors`` lacks, by name.

        Tensors of a group no phase trains (a prompt built and applied but left as drawn) are
        only warned about: files written before such groups were saved lack them, and the
        rebuilt module keeps its freshly drawn values.
        """
        missing = set(self.tuned_state_dict()) - set(tensors)
        trained = set(self.state_of(self.trained_groups))
        untrained = sorted(missing - trained)
        if untrained:
            log.warning(
                "%s lack %d untrained tensor(s) (%s, ...): written before untrained parts were "
                "saved; they keep the values drawn now, so scores may differ slightly from the "
                "run's",
                what,
                len(untrained),
                untrained[0],
            )
        return sorted(missing & trained)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- forward
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Quality scores ``[B]`` (fp32) for ``[B, 3, R, R]`` pixels in [0, 1]."""
        return self.scorer(pixels)

    def score_output(self, batch: dict[str, Any]) -> ScoreOutput:
        """The scorer's output for a score batch (it may read more of the batch than the
        pixels, e.g. image ids): what the scoring loop keeps per image."""
        return self.scorer.score(batch)

    def score_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        """Scores ``[B]`` of a score batch."""
        return self.score_output(batch).scores

    def _needs(self, task: str) -> None:
        if task not in self.scorer.tasks:
            raise ValueError(
                f"{type(self.scorer).__name__} serves tasks {sorted(self.scorer.tasks)}, "
                f"not {task!r}"
            )

    def instruct_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy on the answer tokens of a batch of conversations."""
        self._needs("instruct")
        return self.scorer.instruct_loss(batch["pixels"], batch["turns"])

    def answer_mcq(self, batch: dict[str, Any]) -> list[int]:
        """The chosen option index per question, answered as the batch's ``answer_by`` says
        (greedy generation matched against the letters, or each letter's likelihood:
        :func:`~iqa_lightning.tasks.answer_mcq`)."""
        self._needs("mcq")
        return answer_mcq(self.scorer, batch)

    @torch.no_grad()
    def explain(
        self, pixels: torch.Tensor, questions: Sequence[str], max_new_tokens: int = 48
    ) -> list[str]:
        """Greedy answers (quality explanations) to one question per image, in eval mode.

        Args:
            pixels: ``[B, 3, R, R]`` in [0, 1], on any device (moved to the module's).
            questions: One instruction per image.
            max_new_tokens: Length limit of each answer.
        """
        self._needs("instruct")
        was_training = self.training
        self.eval()
        try:
            answers = self.scorer.generate(pixels.to(self.device), list(questions), max_new_tokens)
        finally:
            self.train(was_training)
        return [a.strip() for a in answers]

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        task = task_of(batch)
        if task == "score":
            _, loss = self.score_step(batch)
        elif task == "instruct":
            loss = self.instruct_loss(batch)
        else:
            raise ValueError("multiple-choice batches are for validation and test only")
        size = batch["pixels"].shape[0]
        self.log(f"train/loss_{task}", loss, batch_size=size)
        loss = self.task_weights[task] * loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        task = task_of(batch)
        if task == "mcq":
            chosen = self.answer_mcq(batch)
            truth = [int(x) for x in batch["answer_index"]]
            correct = [c == t for c, t in zip(chosen, truth, strict=True)]
            self.mcq[stage].update(correct, list(batch["type"]), list(batch["concern"]))
            return
        if task == "instruct":
            loss = self.instruct_loss(batch)
            self.log(
                f"{stage}/loss_instruct", loss, batch_size=batch["pixels"].shape[0],
                add_dataloader_idx=False,
            )  # fmt: skip
            return
        output, loss = self.score_step(batch, with_loss=stage == "val")
        scores, target = output.scores, batch["target"].float()
        # fp64 figures whatever the precision, and whatever the sharding across DDP ranks.
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(scores.double(), target.double())
        if stage == "val":
            self.log("val/loss", loss, batch_size=len(scores), add_dataloader_idx=False)
            return
        self.test_rows.extend(self.prediction_rows(batch, output))

    def score_step(
        self, batch: dict[str, Any], with_loss: bool = True
    ) -> tuple[ScoreOutput, torch.Tensor | None]:
        """The scorer's output for a score batch and its loss against the batch's targets
        (``module.loss``; None without ``with_loss``)."""
        output = self.scorer.score(batch)
        return output, self.loss(output, batch) if with_loss else None

    def prediction_rows(self, batch: dict[str, Any], output: ScoreOutput) -> list[dict[str, Any]]:
        """One test row per image: ``image_id``, ``mos_raw``, ``target``, ``score``; with word
        probabilities ``p_<word>`` (and ``target_<word>``, the level distribution the loss trains
        towards or the rating histogram); and the scorer's extras (e.g. ``description``)."""
        rows = [
            {"image_id": image_id, "mos_raw": mos, "target": target, "score": score}
            for image_id, mos, target, score in zip(
                batch["image_id"], batch["mos_raw"].tolist(), batch["target"].float().tolist(),
                output.scores.tolist(), strict=True,
            )
        ]  # fmt: skip
        for key, values in output.extras.items():
            for row, value in zip(rows, values, strict=True):
                row[key] = value
        head = self.scorer.word_head
        if output.probs is None or head is None:
            return rows
        words = head.words
        targets = target_distribution(self.loss, batch, len(words))
        if targets is not None and targets.shape[-1] != len(words):
            targets = None
        for i, row in enumerate(rows):
            probs = output.probs[i].tolist()
            row.update({f"p_{w}": float(p) for w, p in zip(words, probs, strict=True)})
            if targets is not None:
                values = targets[i].tolist()
                row.update({f"target_{w}": float(t) for w, t in zip(words, values, strict=True)})
        return rows

    def setup(self, stage: str) -> None:
        """Let the loss read what it needs of the data (a level loss: the score range)."""
        self.loss.setup(getattr(self.trainer, "datamodule", None))

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0):
        """Per-dataset figures: a batch of a mix of datasets names each image's dataset
        (``batch["dataset"]``); the correlation metrics take the names before the step scores it
        (:class:`~iqa_lightning.metrics.CorrelationMetrics`)."""
        for metrics in (self.val_metrics, self.test_metrics):
            metrics.set_sources(batch)

    on_test_batch_start = on_validation_batch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._eval_step(batch, "test")

    def _epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = {}
        if metrics["srcc"].update_called:
            values = dict(metrics.compute())
            values[f"{stage}/srcc_plcc"] = (values[f"{stage}/srcc"] + values[f"{stage}/plcc"]) / 2
        metrics.reset()
        values.update(self.mcq[stage].compute(f"{stage}/"))
        self.mcq[stage].reset()
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_metrics("val")
        if "val/srcc" in values and not self.trainer.sanity_checking:
            srcc = float(values["val/srcc"])
            if srcc == srcc:  # not NaN
                self.best_val["val/srcc_best"] = max(self.best_val["val/srcc_best"], srcc)
            values["val/srcc_best"] = torch.tensor(self.best_val["val/srcc_best"])
        self.log_dict(values, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.test_rows = []

    def on_test_epoch_end(self) -> None:
        # Every rank's rows, one per image, before any callback's ``on_test_end`` reads them.
        self.test_rows = gather_rows(self.test_rows)
        self.log_dict(self._epoch_metrics("test"))

    # -------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        """The current phase's optimiser and scheduler (:meth:`PhasePlan.configure`)."""
        phase = self.phase
        groups = self.parameter_groups()
        trained = {name: groups[name] for name in self.trainable_groups}
        total = max_epochs = None
        if phase.scheduler is not None and phase.scheduler_interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
            max_epochs = self.trainer.max_epochs
        return self.plan.configure(self.phase_index, trained, total, max_epochs)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the tuned tensors, by the scorer's names: a checkpoint never holds a
        frozen backbone weight."""
        keep = set(self.tuned_state_dict())
        state = {_unwrapped(k).removeprefix(SCORER): v for k, v in checkpoint["state_dict"].items()}
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in keep}
        checkpoint["best_val"] = dict(self.best_val)
        checkpoint["phase_index"] = self.phase_index
        if "hyper_parameters" in checkpoint:  # plain containers: loadable with weights_only
            checkpoint["hyper_parameters"] = _plain(checkpoint["hyper_parameters"])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load tensors named as this module's or as the scorer's (the names of checkpoints and
        ``tuned.safetensors``)."""
        named = {k if k.startswith(SCORER) else SCORER + k: v for k, v in state_dict.items()}
        return super().load_state_dict(named, strict=strict, assign=assign)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the phase first: the optimiser built next and DDP's wrapping follow it."""
        index = int(checkpoint.get("phase_index", 0))
        if not 0 <= index < len(self.phases):
            raise ValueError(
                f"checkpoint phase_index={index}, but stage.phases has {len(self.phases)} phases"
            )
        if index != self.phase_index:
            self.set_phase(index)
        missing = self.missing_tuned(checkpoint["state_dict"], "checkpoint")
        if missing:
            raise KeyError(
                f"checkpoint lacks tuned tensors {sorted(missing)[:5]}; was it written by a run "
                "with the same prompt and stage?"
            )

        self.best_val.update(checkpoint.get("best_val", {}))
