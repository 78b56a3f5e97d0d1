"""Helpers shared by the preprocessing-cache tests."""

from pathlib import Path

from iqa_lightning.data import KonIQDataModule

SIZE = 16


def koniq(root, cache_dir, **kwargs):
    """A set-up KonIQ data module, cached in ``cache_dir`` (``None``: no cache)."""
    kwargs.setdefault("image_size", SIZE)
    kwargs.setdefault("batch_size", 4)
    dm = KonIQDataModule(root=root, cache=cache_dir is not None, cache_dir=cache_dir, **kwargs)
    dm.setup("fit")
    return dm


def entries(cache_dir):
    """The cache's entry files, sorted."""
    return sorted(Path(cache_dir).rglob("*.npy"))
