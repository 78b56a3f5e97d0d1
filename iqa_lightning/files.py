"""Run files written whole or not at all, with the permissions of any other file.

:func:`atomic_write` writes through a temporary file in the target's own folder, flushes it to
disk and renames it over the target with :func:`os.replace`: a process killed mid-write leaves
the previous file whole (and at most a stray ``.partial-*.tmp``). The file then gets the mode an
ordinary ``open(path, "w")`` would give it, ``0o666`` less the process umask (``0o644`` under the
usual ``022``), not the ``0o600`` of a temporary file (or of ``safetensors.save_file``).

Torch-free and Lightning-free, so every layer (checkpoints, callbacks, models) writes with it:
:func:`iqa_lightning.checkpoints.atomic_save` (``torch.save``) and :func:`save_tensors`
(safetensors) are the two writers built on it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

PARTIAL_PREFIX = ".partial-"


def file_mode() -> int:
    """The mode a newly created ordinary file gets in this process: ``0o666 & ~umask``."""
    mask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(binary file)`` on a temporary file in the same folder,
    flushed and synced, then renamed over ``path``; the folder is created.

    Args:
        path: Target file.
        write: Writes the content to the open file it is given.

    Returns:
        The target path.

    Raises:
        Whatever ``write`` raises; the temporary file is removed and ``path`` left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, file_mode())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_tensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save tensors by name with safetensors, atomically (:func:`atomic_write`).

    Args:
        tensors: Name -> contiguous tensor (never a frozen backbone weight in a run folder).
        path: Target ``.safetensors`` file; its folder is created.
        metadata: String -> string header metadata.
    """
    from safetensors.torch import save

    data = save(dict(tensors), metadata=None if metadata is None else dict(metadata))
    return atomic_write(path, lambda f: f.write(data))
