"""Backbone adapters, one per LMM family, and tiny random builders for tests and the demo.

Names are imported on first use (PEP 562): a run imports only its own family's module
(``model=llava_1_5_7b`` never imports mPLUG-Owl2's modelling code). :data:`FAMILIES` and
:func:`family` import every family first, so the registry is always complete.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Family modules, each registering its adapter class (:mod:`.registry`).
FAMILY_MODULES = ("llava", "bunny", "mplug_owl2", "qwen2_vl")

#: Exported name -> the submodule that defines it.
_EXPORTS = {
    "Backbone": "base",
    "resolve_dtype": "base",
    "BunnyBackbone": "bunny",
    "build_tiny_bunny": "bunny",
    "load_bunny": "bunny",
    "LlavaBackbone": "llava",
    "load_llava": "llava",
    "MplugOwl2Backbone": "mplug_owl2",
    "build_tiny_mplug_owl2": "mplug_owl2",
    "load_mplug_owl2": "mplug_owl2",
    "Qwen2VLBackbone": "qwen2_vl",
    "load_qwen2_vl": "qwen2_vl",
    "patchify": "qwen2_vl",
    "register_family": "registry",
    "build_tiny_llava": "tiny",
    "build_tiny_qwen2_5_vl": "tiny",
    "build_tiny_qwen2_vl": "tiny",
}
_REGISTRY_VIEWS = ("FAMILIES", "family", "tiny_builders")

__all__ = sorted([*_EXPORTS, *_REGISTRY_VIEWS])


def load_families() -> None:
    """Import every family module, so each has registered itself."""
    for name in FAMILY_MODULES:
        import_module(f"{__name__}.{name}")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_VIEWS:
        load_families()
        return getattr(import_module(f"{__name__}.registry"), name)
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
