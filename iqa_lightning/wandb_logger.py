"""The W&B logger of ``conf/logger/wandb.yaml``: Lightning's, less one line of noise.

Lightning's ``WandbLogger`` passes ``anonymous=None`` to ``wandb.init`` whatever it is given, and
wandb answers any value with "The anonymous setting has no effect and will be removed in a future
version". This one passes ``anonymous`` only when it is given a value. The rest of the quieting
(no run summary after the figures) is :mod:`iqa_lightning.quiet`'s.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

__all__ = ["WandbLogger"]


class WandbLogger(_LightningWandbLogger):
    """``lightning.pytorch.loggers.WandbLogger`` without ``anonymous=None`` in ``wandb.init``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
