"""The grid sweeper as a Hydra plugin: ``hydra/sweeper=grid`` (see :mod:`iqa_lightning.sweeps`).

Hydra instantiates sweepers only from the ``hydra_plugins`` package; the code lives in
:class:`iqa_lightning.sweeps.GridSweeper`.
"""

from iqa_lightning import sweeps


class GridSweeper(sweeps.GridSweeper):
    """Hydra's basic sweeper over a union of grids, without duplicate jobs."""
