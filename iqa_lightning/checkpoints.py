"""Checkpoint files that survive a kill and load without unpickling code.

- Atomic: a checkpoint is written to a temporary file in its own folder, flushed to disk, and
  renamed over the target with :func:`os.replace` (:func:`iqa_lightning.files.atomic_write`,
  which the run's safetensors files share). A process killed mid-write leaves the previous
  ``last.ckpt`` whole (and at most a stray ``.partial-*.tmp``). Lightning's own writer goes through
  an fsspec transaction whose temporary file lives in the system temp folder; moving it onto
  another file system is a copy, which a kill can cut short.
- Plain: OmegaConf containers anywhere in the checkpoint become dicts and lists before saving,
  so every file written loads with ``torch.load(weights_only=True)``.
- Safe to load: checkpoints are always read with ``weights_only=True``, whatever a caller asks;
  a file that needs more (a pickled class, a function) is refused with :class:`UnsafeCheckpointError`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from iqa_lightning.errors import UnsafeCheckpointError
from iqa_lightning.files import atomic_write


def plain(value: Any) -> Any:
    """OmegaConf containers (at any depth) as plain dicts and lists; everything else as it is."""
    if type(value).__name__ in ("DictConfig", "ListConfig"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, OrderedDict):
        return OrderedDict((k, plain(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(plain(v) for v in value)
    return value


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temporary file in the same folder and ``os.replace``
    (:func:`iqa_lightning.files.atomic_write`: the file gets an ordinary file's mode).

    Args:
        obj: What to save.
        path: Target file; its folder is created.

    Returns:
        The target path.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: No such file.
        UnsafeCheckpointError: The file holds pickled objects that ``weights_only`` refuses; the
            message names the file and the first such object.
    """
    remote = "://" in str(path)
    if not remote and not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (ckpt_path)")
    try:
        if remote:
            import fsspec

            with fsspec.open(str(path), "rb") as f:
                return torch.load(f, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise UnsafeCheckpointError(
            f"checkpoint {str(path)!r} holds {what}; it is refused because loading it could run "
            "arbitrary code. iqa-lightning checkpoints hold tensors, numbers, strings and plain "
            "containers only (tuned tensors, optimiser and scheduler state)"
        ) from None


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes of plain data, ``weights_only`` reads.

    Set as a Trainer plugin (``trainer.plugins`` in ``conf/trainer/default.yaml``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO.save_checkpoint takes no storage_options")
        if "://" in str(path):
            super().save_checkpoint(plain(checkpoint), path)
            return
        atomic_save(plain(checkpoint), path)

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """:func:`load_checkpoint`: always ``weights_only=True``, whatever ``weights_only`` says."""
        return load_checkpoint(path, map_location)
