"""Numeric config values checked before anything is built: ``prompt.size=-3`` or
``dataset.batch_size=abc`` ends with one line naming the key, in a second, not after the model
loaded. Each rule names keys by pattern (``*`` is one key level) and what their values must be.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from typing import Any

from iqa_lightning.errors import ConfigError

#: (key pattern, kind, lowest, highest, null allowed); kind: int, number, positive (a number
#: above 0), workers or threads (an int, or ``auto``); bounds inclusive, None: unbounded.
RULES: tuple[tuple[str, str, float | None, float | None, bool], ...] = (
    ("seed", "int", None, None, True),
    ("model.image_size", "int", 1, None, False),
    ("prompt.size", "int", 1, None, True),  # null: a prompt without a size (overlay)
    ("prompt.delta", "positive", None, None, False),
    ("prompt.init_scale", "number", 0, None, False),
    ("dataset.batch_size", "int", 1, None, False),
    ("dataset.eval_batch_size", "int", 1, None, True),
    ("dataset.num_workers", "workers", 0, None, False),
    ("dataset.split_ratios.*", "number", 0, 1, False),
    ("dataset.n_refs", "int", 1, None, False),
    ("dataset.generated_size", "int", 1, None, False),
    ("instruct.batch_size", "int", 1, None, False),
    ("instruct.steps_per_epoch", "int", 1, None, True),
    ("instruct.num_workers", "workers", 0, None, False),
    ("threads", "threads", 1, None, True),
    ("trainer.max_steps", "int", -1, None, True),
    ("trainer.accumulate_grad_batches", "int", 1, None, False),
    ("trainer.log_every_n_steps", "int", 1, None, False),
    ("trainer.gradient_clip_val", "number", 0, None, True),
    ("trainer.check_val_every_n_epoch", "int", 1, None, True),
    ("trainer.limit_*_batches", "number", 0, None, True),
    ("module.task_weights.*", "number", 0, None, False),
    ("stage.phases.*.epochs", "int", 1, None, True),
    ("stage.phases.*.lr.*", "positive", None, None, False),
    ("stage.lora.r", "int", 1, None, False),
    ("stage.lora.lora_alpha", "number", 0, None, False),
    ("stage.lora.lora_dropout", "number", 0, 1, False),
    ("callbacks.early_stopping.patience", "int", 0, None, False),
)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, resolved value) of every leaf; values that cannot be resolved are skipped
    (their own check comes where they are used)."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, DictConfig):
        items = [(str(k), k) for k in node.keys()]
    elif isinstance(node, ListConfig):
        items = [(str(i), i) for i in range(len(node))]
    else:
        return
    for name, key in items:
        path = f"{prefix}.{name}" if prefix else name
        try:
            value = node[key]
        except Exception:  # a missing (???) or unresolvable value
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            yield from _leaves(value, path)
        else:
            yield path, value


def _problem(
    value: Any, kind: str, low: float | None, high: float | None, null: bool
) -> str | None:
    if value is None:
        return None if null else "must be set"
    if kind in ("workers", "threads"):
        if value == "auto":
            return None
        kind = "int"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be {'an integer' if kind == 'int' else 'a number'}"
    if kind == "int" and not isinstance(value, int):
        return "must be an integer"
    if not math.isfinite(value):
        return "must be finite"
    if kind == "positive" and value <= 0:
        return "must be above 0"
    if low is not None and value < low:
        return f"must be at least {low}"
    if high is not None and value > high:
        return f"must be at most {high}"
    return None


def check_numbers(cfg: Any, rules=RULES) -> None:
    """Check every key a rule names; the first bad value ends the run.

    Raises:
        ConfigError: ``<key>=<value> must be ...``.
    """
    for key, value in _leaves(cfg):
        for pattern, kind, low, high, null in rules:
            if fnmatch.fnmatchcase(key, pattern) and key.count(".") == pattern.count("."):
                problem = _problem(value, kind, low, high, null)
                if problem:
                    raise ConfigError(f"{key}={value!r} {problem}")
    check_prompt_fits(cfg)
    check_native_size((cfg.get("dataset") or {}).get("native_size"), cfg.get("prompt"))


def check_prompt_fits(cfg: Any) -> None:
    """A pixel prompt fits its image: a border of ``size`` leaves a centre, a patch fits."""
    prompt, model = cfg.get("prompt") or {}, cfg.get("model") or {}
    size, side = prompt.get("size"), model.get("image_size")
    if not isinstance(size, int) or not isinstance(side, int):
        return
    target = str(prompt.get("_target_", ""))
    if target.endswith("PaddingPrompt") and 2 * size >= side:
        raise ConfigError(
            f"prompt.size={size}: a padding of {size} px on each side leaves no image inside "
            f"model.image_size={side}; use prompt.size below {(side + 1) // 2}"
        )
    if "Patch" in target and size > side:
        raise ConfigError(f"prompt.size={size}: a patch larger than model.image_size={side}")


def check_native_size(native_size: Any, prompt: Any, key: str = "dataset.native_size") -> None:
    """Images at their own size go past the ``model.image_size`` square that a prompt other
    than ``prompt=none`` (padding, patch, overlay, ...) is drawn on: refuse the two together.

    Args:
        native_size: The value of ``key``.
        prompt: The ``prompt`` config (its ``_target_``), or None.
        key: The config key of ``native_size`` (``native_size`` in the scoring CLI).

    Raises:
        ConfigError: ``<key>=true`` with such a prompt.
    """
    target = str((prompt or {}).get("_target_") or "")
    if native_size is True and target and not target.endswith(".NoPrompt"):
        name = target.rsplit(".", 1)[-1]
        raise ConfigError(
            f"{key}=true feeds each image at its own size, but prompt is {name}, drawn on the "
            f"model.image_size square; use prompt=none or {key}=false"
        )
