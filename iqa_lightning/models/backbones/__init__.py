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

#: Submodule -> the names it defines that the package exports.
_EXPORTED_BY = {
    "base": ("Backbone", "resolve_dtype"),
    "bunny": ("BunnyBackbone", "build_tiny_bunny", "load_bunny"),
    "llava": ("LlavaBackbone", "load_llava"),
    "mplug_owl2": ("MplugOwl2Backbone", "build_tiny_mplug_owl2", "load_mplug_owl2"),
    "qwen2_vl": ("Qwen2VLBackbone", "load_qwen2_vl", "patchify"),
    "registry": ("register_family",),
    "tiny": ("build_tiny_llava", "build_tiny_qwen2_5_vl", "build_tiny_qwen2_vl"),
}
#: Exported name -> the submodule that defines it.
_EXPORTS = {name: module for module, names in _EXPORTED_BY.items() for name in names}
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
