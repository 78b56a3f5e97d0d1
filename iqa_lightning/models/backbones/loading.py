"""Loading checkpoints: weight dtypes by name, and ``from_pretrained`` calls whose failures name
the config key."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from iqa_lightning.quantization import loading_kwargs

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a config string such as ``"bfloat16"`` to a torch dtype.

    Raises:
        ValueError: The name is not a known dtype; the message names ``model.dtype``.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_pretrained(loader, pretrained: str, what: str, **kwargs):
    """Call ``loader.from_pretrained`` and turn a failure into an error naming the config key.

    A local folder (a path starting with ``/``, ``.`` or ``~``) must exist; a hub id is fetched
    online or read from the local cache when ``HF_HUB_OFFLINE=1`` (``huggingface_hub`` respects it).
    """
    if pretrained.startswith(("/", ".", "~")) and not Path(pretrained).expanduser().is_dir():
        raise FileNotFoundError(f"model.pretrained={pretrained!r}: no such folder")
    kwargs = loading_kwargs(loader, what, kwargs)  # model.quantization, when asked for
    try:
        return loader.from_pretrained(
            str(Path(pretrained).expanduser()) if pretrained.startswith("~") else pretrained,
            **kwargs,
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            " (HF_HUB_OFFLINE is set: the files must already be in the local cache)"
            if offline
            else ""
        )
        raise OSError(
            f"model.pretrained={pretrained!r}: cannot load the {what}{hint}: {err}"
        ) from err
