"""GRPO (group relative policy optimisation, arXiv 2402.03300) on quality answers
(``method=grpo``), as Q-Insight (arXiv 2503.22679) and VisualQuality-R1 (arXiv 2505.14460)
train their reasoning scorers.

    python train.py experiment=grpo_learning      # the trained tiny LMM on the learning set
    python train.py experiment=grpo_q_insight dataset.root=/data/koniq10k
    python train.py experiment=grpo_visualquality_r1 dataset.root=/data/kadid10k

Each training step of a GRPO phase, for a batch of ``B`` images:

1. rollout: ``G`` answers per image (``method.group_size``) sampled with ``method.rollout``
   (``generate``, prompts left-padded), in eval mode and without gradients;
2. rewards (:mod:`iqa_lightning.models.rewards`, ``method.rewards``) summed per answer, and
   advantages normalised within each image's group (:func:`group_advantages`);
3. the clipped objective (:func:`clipped_objective`) on the completion tokens' log-probabilities
   against the policy that sampled them, plus ``beta`` times the per-token KL estimate
   (:func:`per_token_kl`) to the reference policy (``method.reference``): the same model with
   its LoRA disabled (:func:`adapters_disabled`: no second copy of the weights), or the
   trained parameters as GRPO found them (a copy of those alone), each sequence's mean over
   its tokens, then the batch mean.

``trainable: [language_model]`` tunes the decoder's own weights (full parameters, as both
references do) with ``method.reference: start``, which then holds the one copy of them.
With ``method.iterations`` (mu) above 1 a rollout serves mu optimiser steps (the batches in
between are not read), so the ratio to the sampling policy moves and the clip bites; with 1
(both references' setting) the ratio is 1 and the objective is the policy gradient. Only LoRA
trains by default (the references train every weight; their reference policy is then a copy of
the model). A phase named in ``method.sft_phases`` trains supervised answers instead
(:class:`~iqa_lightning.methods.generative.GenerativeModule`): the format warm-up of a model
that never wrote a number. Rollouts run on ``generate``; a vLLM engine is not used.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from iqa_lightning.errors import ConfigError
from iqa_lightning.methods import register
from iqa_lightning.methods.generative import Generative, GenerativeModule
from iqa_lightning.models.generation import Rollout, Sampling
from iqa_lightning.models.rewards import Answers, group_advantages, make_rewards, total_reward
from iqa_lightning.tasks import task_of

#: The per-step rewards of a run, in its folder.
REWARDS_FILE = "grpo_rewards.csv"


def per_token_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The k3 estimate of KL(policy || reference) per token:
    ``exp(ref - logp) - (ref - logp) - 1`` (>= 0, zero where they agree)."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def clipped_objective(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with
    ``r = exp(logp - old_logp)``, and where the clipped term was the smaller (clipped tokens)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages[:, None]
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages[:, None]
    return -torch.min(unclipped, clipped), (clipped < unclipped)


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over each sequence's tokens (``mask``), then over the sequences."""
    mask = mask.float()
    return ((values * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss of a rollout and its figures (``kl``, ``clip_ratio``)."""
    loss, clipped = clipped_objective(logps, old_logps, advantages, epsilon_low, epsilon_high)
    figures = {"clip_ratio": (clipped.float() * mask).sum() / mask.sum().clamp(min=1)}
    if ref_logps is not None and beta > 0:
        kl = per_token_kl(logps, ref_logps)
        loss = loss + beta * kl
        figures["kl"] = sequence_mean(kl.detach(), mask)
    return sequence_mean(loss, mask), figures


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Within the block every peft adapter layer of ``model`` is bypassed (the base weights
    alone: the reference policy); their ``requires_grad`` flags are put back after."""
    from peft.tuners.tuners_utils import BaseTunerLayer  # peft: the LoRA layers' base class

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    flags = [(p, p.requires_grad) for m in layers for p in m.parameters()]
    states = [m.disable_adapters for m in layers]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, disabled in zip(layers, states, strict=True):
            layer.enable_adapters(not disabled)
        for param, flag in flags:
            param.requires_grad_(flag)


@contextmanager
def weights_swapped(
    params: dict[str, nn.Parameter], values: dict[str, torch.Tensor]
) -> Iterator[None]:
    """Within the block each parameter of ``params`` holds ``values[name]`` (copied in place,
    no gradients); the current values are put back after."""
    with torch.no_grad():
        saved = {name: p.detach().clone() for name, p in params.items()}
        for name, p in params.items():
            p.copy_(values[name])
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])


def keep_reward_rows(path: Path, upto_step: int) -> None:
    """Keep the rows of a rewards file whose ``step`` is at most ``upto_step`` (0: none, the
    file removed)."""
    if not path.exists():
        return
    if upto_step <= 0:
        path.unlink()
        return
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], [r for r in reader if int(r["step"]) <= upto_step]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def append_reward_rows(path: Path, rows: list[dict[str, float]]) -> None:
    """Append step rows to a rewards file (its header written first when it is new)."""
    if not rows:
        return
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


#: ``method.reference``: ``base`` is the backbone alone (LoRA bypassed), ``start`` the policy as
#: the first GRPO step found it (a format warm-up in LoRA included).
REFERENCES = ("base", "start")


class GRPOModule(GenerativeModule):
    """:class:`~iqa_lightning.methods.generative.GenerativeModule` trained by GRPO.

    Args:
        rewards: Reward entries (:func:`~iqa_lightning.models.rewards.make_rewards`).
        group_size: ``G``, answers per image.
        rollout: :class:`~iqa_lightning.models.generation.Sampling` settings of the rollouts.
        beta: KL weight (0: no reference pass).
        epsilon: Lower clip; ``epsilon_high``: upper clip (None: ``epsilon``).
        iterations: Optimiser steps per rollout (mu).
        advantage_eps: Added to the group std.
        reference: The reference policy of the KL term (:data:`REFERENCES`): ``base``, the
            model with its LoRA bypassed (the references' choice with PEFT: their GRPO starts
            from a fresh adapter, so it is the starting policy too); ``start``, the trained
            parameters as the first GRPO step found them (a copy of those alone, the frozen
            weights shared), for a run whose warm-up phase trained LoRA before GRPO.
        **kwargs: :class:`GenerativeModule` arguments.
    """

    hparams_ignore = (*GenerativeModule.hparams_ignore, "rewards", "rollout")

    def __init__(
        self,
        *args: Any,
        rewards: list[dict[str, Any]],
        group_size: int = 8,
        rollout: dict[str, Any] | None = None,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        iterations: int = 1,
        advantage_eps: float = 1e-4,
        reference: str = "base",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if int(group_size) < 2:
            raise ConfigError(
                f"method.group_size={group_size} must be >= 2 (advantages within a group)"
            )
        if int(iterations) < 1:
            raise ConfigError(f"method.iterations={iterations} must be >= 1")
        if float(beta) < 0 or float(epsilon) <= 0:
            raise ConfigError(f"method.beta={beta} must be >= 0 and method.epsilon={epsilon} > 0")
        if reference not in REFERENCES:
            raise ConfigError(f"method.reference={reference!r} must be one of {list(REFERENCES)}")
        self.reference = reference
        if reference == "base" and float(beta) > 0:
            for phase in self.phases:
                beyond = sorted(set(phase.trainable) - {"lora"})
                if phase.name not in self.sft_phases and beyond:
                    raise ConfigError(
                        f"method.reference=base bypasses LoRA for the KL's reference, but phase "
                        f"{phase.name} trains {beyond}: that reference would be the policy "
                        "itself; use method.reference=start (a copy of what trains)"
                    )
        #: ``reference: start``: the trained parameters at the first GRPO step, by name.
        self.reference_state: dict[str, torch.Tensor] | None = None
        self.rewards = make_rewards(rewards)
        self.group_size = int(group_size)
        self.rollout_sampling = Sampling(**(rollout or {}))
        self.beta = float(beta)
        self.epsilon_low = float(epsilon)
        self.epsilon_high = float(epsilon if epsilon_high is None else epsilon_high)
        self.iterations = int(iterations)
        self.advantage_eps = float(advantage_eps)
        self._buffer: dict[str, Any] | None = None
        self._grpo_steps = 0
        #: One row per GRPO step of the current epoch: the optimiser step, mean reward, each
        #: term's mean, the parsed share (appended to ``grpo_rewards.csv`` at each epoch's end).
        self.reward_history: list[dict[str, float]] = []

    @torch.no_grad()
    def sample(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A rollout of the batch with its rewards, advantages and the log-probabilities of the
        sampling policy (``iterations > 1``) and of the reference policy (``beta > 0``)."""
        was_training = self.training
        self.eval()  # no adapter dropout while sampling
        try:
            rollout = self.scorer.rollout(batch, self.group_size, self.rollout_sampling)
            old = self.scorer.token_logps(rollout) if self.iterations > 1 else None
            ref = None
            if self.beta > 0:
                with self.reference_policy():
                    ref = self.scorer.token_logps(rollout)
        finally:
            self.train(was_training)
        parsed = [self.scorer.parser.parse(t) for t in rollout.texts]
        scores = [p.score if p.score is not None else self.scorer.parser.failure_score()
                  for p in parsed]  # fmt: skip
        device = rollout.completion_ids.device
        answers = Answers(
            texts=rollout.texts,
            scores=torch.tensor(scores, dtype=torch.float32, device=device),
            parsed=torch.tensor([p.score is not None for p in parsed], device=device),
            mos=self.to_answer_scale(batch["target"]).to(device),
            group=self.group_size,
        )
        rewards, terms = total_reward(self.rewards, answers)
        return {
            "rollout": rollout,
            "old": old,
            "ref": ref,
            "rewards": rewards,
            "terms": terms,
            "advantages": group_advantages(rewards, self.group_size, self.advantage_eps),
            "parsed": answers.parsed.float().mean(),
        }

    def _trained(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    @contextmanager
    def reference_policy(self) -> Iterator[None]:
        """Within the block the module is the reference policy (``method.reference``)."""
        if self.reference == "base":
            with adapters_disabled(self.scorer.backbone):
                yield
            return
        trained = self._trained()
        if self.reference_state is None:  # the first GRPO step: the policy it starts from
            self.reference_state = {n: p.detach().clone() for n, p in trained.items()}
        missing = set(trained) - set(self.reference_state)
        if missing:
            raise RuntimeError(f"the reference policy lacks trained tensors {sorted(missing)[:3]}")
        with weights_swapped(trained, self.reference_state):
            yield

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.reference_state is not None:  # a resumed run keeps its reference
            checkpoint["grpo_reference"] = {k: v.cpu() for k, v in self.reference_state.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("grpo_reference")
        if saved is not None:
            device = next(self.parameters()).device
            self.reference_state = {k: v.to(device) for k, v in saved.items()}

    def grpo_step(self, batch: dict[str, Any]) -> torch.Tensor:
        if self._buffer is None or self._grpo_steps % self.iterations == 0:
            self._buffer = self.sample(batch)
        self._grpo_steps += 1
        drawn = self._buffer
        rollout: Rollout = drawn["rollout"]
        logps = self.scorer.token_logps(rollout)
        old = drawn["old"] if drawn["old"] is not None else logps.detach()
        loss, figures = grpo_loss(
            logps, old, drawn["ref"], drawn["advantages"], rollout.completion_mask,
            self.beta, self.epsilon_low, self.epsilon_high,
        )  # fmt: skip
        size = len(batch["target"])
        rewards = drawn["rewards"]
        logged = {
            "train/reward": rewards.mean(),
            "train/reward_std": rewards.view(-1, self.group_size).std(1).mean(),
            "train/parsed": drawn["parsed"],
            "train/completion_length": rollout.completion_mask.sum(1).float().mean(),
            **{f"train/reward_{name}": value for name, value in drawn["terms"].items()},
            **{f"train/{name}": value for name, value in figures.items()},
        }
        self.log_dict(logged, batch_size=size)
        step = self.trainer.global_step + 1 if self._trainer is not None else self._grpo_steps
        self.reward_history.append(
            {"step": step, "reward": float(rewards.mean()),
             "parsed": float(drawn["parsed"]),
             **{name: float(value) for name, value in drawn["terms"].items()}}
        )  # fmt: skip
        return loss

    def _rewards_file(self) -> Path:
        return Path(self.trainer.default_root_dir) / REWARDS_FILE

    def on_train_start(self) -> None:
        """A new run starts ``grpo_rewards.csv`` afresh; a resumed one keeps the rows up to its
        checkpoint's step (the loops are restored by now)."""
        if self.trainer.is_global_zero:
            resumed = self.trainer.ckpt_path is not None
            keep_reward_rows(self._rewards_file(), self.trainer.global_step if resumed else 0)
        self.reward_history = []

    def on_train_epoch_end(self) -> None:
        """Each epoch's step rows go to ``grpo_rewards.csv`` in the run folder (rank 0), so a
        stopped run keeps what it trained."""
        if self.trainer.is_global_zero:
            append_reward_rows(self._rewards_file(), self.reward_history)
        self.reward_history = []

    def on_train_end(self) -> None:
        self.on_train_epoch_end()  # the steps of an epoch cut short

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if task_of(batch) != "score":
            raise ConfigError("GRPO trains on score batches only (method.tasks: [score])")
        if self.phase.name in self.sft_phases:
            loss = self.sft_step(batch)
        else:
            loss = self.grpo_step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss


@register
class GRPO(Generative):
    """:class:`GRPOModule`, its settings from ``method`` (conf/method/grpo.yaml)."""

    name = "grpo"
    module_class = GRPOModule

    def extra_arguments(self, cfg: Any) -> dict[str, Any]:
        method = cfg.method
        plain = OmegaConf.to_container(method, resolve=True)
        return {
            "rewards": plain.get("rewards") or [],
            "group_size": int(method.group_size),
            "rollout": plain.get("rollout") or {},
            "beta": float(method.beta),
            "epsilon": float(method.epsilon),
            "epsilon_high": method.get("epsilon_high"),
            "iterations": int(method.get("iterations", 1)),
            "advantage_eps": float(method.get("advantage_eps", 1e-4)),
            "reference": str(method.get("reference", "base")),
        }


__all__ = [
    "GRPO",
    "GRPOModule",
    "adapters_disabled",
    "append_reward_rows",
    "clipped_objective",
    "grpo_loss",
    "keep_reward_rows",
    "per_token_kl",
    "sequence_mean",
    "weights_swapped",
]
