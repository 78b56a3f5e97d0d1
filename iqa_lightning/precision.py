"""Half precision that leaves the labels alone.

With ``precision=bf16-true`` (or ``16-true``) Lightning casts every floating tensor of a batch to
the half type before the step, the labels included: a KonIQ MOS of 87.3 becomes 87.5 in bf16
and the test figures and ``predictions_test.csv`` would be computed against rounded labels.
These plugins cast the pixels and keep ``target`` and ``mos_raw`` in fp32; scores and losses are
fp32 anyway (the score head upcasts its logits).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.precision import FSDPPrecision, HalfPrecision

HALF_TRUE = ("bf16-true", "16-true")
LABEL_KEYS = ("target", "mos_raw")


class _KeepLabels:
    """Precision mixin: dict batches keep their label tensors as they are."""

    keep: tuple[str, ...] = LABEL_KEYS

    def convert_input(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return super().convert_input(data)
        convert = super().convert_input
        return {key: v if key in self.keep else convert(v) for key, v in data.items()}


class LabelSafeHalfPrecision(_KeepLabels, HalfPrecision):
    """``bf16-true`` / ``16-true`` precision that keeps ``target`` and ``mos_raw`` in fp32.

    Args:
        precision: ``"bf16-true"`` or ``"16-true"`` (``trainer.precision``).
    """

    def __init__(self, precision: str = "bf16-true") -> None:
        if precision not in HALF_TRUE:
            raise ValueError(f"trainer.precision={precision!r}: expected one of {HALF_TRUE}")
        super().__init__(precision)


class LabelSafeFSDPPrecision(_KeepLabels, FSDPPrecision):
    """The same under FSDP (which needs its own precision plugin)."""


def label_safe_precision(precision: str, fsdp: bool) -> HalfPrecision | FSDPPrecision:
    """The label-safe plugin for a half ``trainer.precision`` (``bf16-true`` / ``16-true``)."""
    if precision not in HALF_TRUE:
        raise ValueError(f"trainer.precision={precision!r}: expected one of {HALF_TRUE}")
    return LabelSafeFSDPPrecision(precision) if fsdp else LabelSafeHalfPrecision(precision)
