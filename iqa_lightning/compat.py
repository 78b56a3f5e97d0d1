"""Every use of Lightning's private API, in one place.

Lightning offers no public way to re-wrap a model in a fresh ``DistributedDataParallel`` mid-fit
(the phase switch needs it: parameters unfrozen after DDP wrapped the model are never
all-reduced) or to rebuild a loader around another sampler. These wrappers name what is used;
``tests/test_compat.py`` checks that the installed Lightning still has it, with the same
signature, so an upgrade that changes it fails there and not in the middle of a run.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy

# What this module relies on: (owner, attribute, parameter names).
PRIVATE_API = (
    ("lightning.pytorch.strategies.DDPStrategy", "_setup_model", ("self", "model")),
    ("lightning.pytorch.strategies.DDPStrategy", "_register_ddp_hooks", ("self",)),
    ("lightning.pytorch.utilities.data", "_update_dataloader", ("dataloader", "sampler", "mode")),
    # Overridden by iqa_lightning.strategies to build the wrap policy from the current phase.
    ("lightning.pytorch.strategies.FSDPStrategy", "_setup_model", ("self", "model")),
)


def rewrap_ddp(strategy: Any) -> bool:
    """Wrap the strategy's LightningModule in a new ``DistributedDataParallel``.

    The new wrapper broadcasts rank 0's parameters and registers the parameters that now
    require gradients with its reducer; communication hooks are registered again.

    Returns:
        Whether the strategy is DDP (otherwise nothing is done).
    """
    if not isinstance(strategy, DDPStrategy):
        return False
    strategy.model = strategy._setup_model(strategy.lightning_module)
    strategy._register_ddp_hooks()
    return True


def update_dataloader(loader: Any, sampler: Any) -> Any:
    """``loader`` rebuilt with ``sampler`` in place of its own (all other arguments kept)."""
    from lightning.pytorch.utilities.data import _update_dataloader

    return _update_dataloader(loader, sampler)


__all__ = ["PRIVATE_API", "rewrap_ddp", "update_dataloader"]
