"""Fail in seconds when a model preset's weights cannot be had: before anything is built, a hub
id that is not in the local Hugging Face cache is refused at once when ``HF_HUB_OFFLINE=1`` (or
``TRANSFORMERS_OFFLINE=1``) or when the hub cannot be reached, with one line naming the preset,
the hub id and the cache folder. Without this check ``from_pretrained`` retries the hub for
most of a minute and ends on a wrapped ``OSError``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from iqa_lightning.errors import ConfigError

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: Seconds to wait for the hub's address and a TCP connection.
CONNECT_TIMEOUT_S = 3.0


def offline() -> bool:
    """Whether the environment asks the Hugging Face libraries to stay offline."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in OFFLINE_ENV)  # fmt: skip


def is_hub_id(pretrained: str) -> bool:
    """``owner/name`` (no leading ``/``, ``.`` or ``~``, not an existing path)."""
    text = str(pretrained)
    if text.startswith(("/", ".", "~")) or Path(text).exists():
        return False
    return text.count("/") == 1 and all(text.split("/"))


def hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``) opens within ``timeout`` seconds."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def cached(repo_id: str) -> bool:
    """Whether the local cache holds ``repo_id``'s ``config.json``."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def cache_folder() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def check_model_available(model_cfg: Any, preset: str | None = None, key: str = "model") -> None:
    """Refuse at once a ``<key>.pretrained`` hub id that cannot be loaded (see module docstring).

    Args:
        model_cfg: The model's config node (``cfg.model``).
        preset: The preset's name (``llava_1_5_7b``), for the message.
        key: The config key of the node.

    Raises:
        ConfigError: Offline (or the hub unreachable) and the id not in the local cache.
    """
    pretrained = model_cfg.get("pretrained") if hasattr(model_cfg, "get") else None
    if not isinstance(pretrained, str) or not is_hub_id(pretrained) or cached(pretrained):
        return
    if offline():
        why = "HF_HUB_OFFLINE=1" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE=1"
    elif not hub_reachable():
        why = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')} cannot be reached"
    else:
        return
    name = f"{key}={preset}" if preset else f"{key}.pretrained={pretrained}"
    raise ConfigError(
        f"{name}: {pretrained} is not in the local cache ({cache_folder()}) and {why}; download "
        f"it first (huggingface-cli download {pretrained}), set {key}.pretrained to a local "
        "folder, or pick a preset that needs no download (model=tiny_llava_trained)"
    )


def preset_choice(group: str = "model") -> str | None:
    """The option chosen for ``group`` in the running Hydra app, when there is one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except (ImportError, ValueError):
        return None
