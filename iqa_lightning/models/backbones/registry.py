"""The registered backbone families: one :class:`~iqa_lightning.models.backbones.base.Backbone`
subclass each, found by name.

A family registers itself with :func:`register_family` in its own module;
:func:`family` and ``iqa_lightning.models.backbones.FAMILIES`` import every family module first
(the package imports a family only when one of its names is used). The conformance suite
(``tests/models/test_backbones.py``) runs over every registered family and its tiny builders. A new family is one module here
plus one YAML under ``conf/model/`` (``_target_: <module>.<Class>.from_pretrained``).
"""

from __future__ import annotations

from importlib import import_module

FAMILIES: dict[str, type] = {}


def register_family(cls: type) -> type:
    """Class decorator: make a backbone family available by its ``family`` name.

    Raises:
        ValueError: The name is taken by another class, or the class lacks a declared fact.
    """
    name = cls.family
    if name in FAMILIES and FAMILIES[name] is not cls:
        raise ValueError(f"backbone family {name!r} is registered twice")
    missing = [fact for fact in ("model_class", "block_names", "tiny") if not getattr(cls, fact)]
    if missing:
        raise ValueError(f"backbone family {name!r} does not declare {missing}")
    FAMILIES[name] = cls
    return cls


def family(name: str) -> type:
    """The adapter class of a registered family.

    Raises:
        KeyError: Unknown family; the message lists the registered ones.
    """
    from iqa_lightning.models.backbones import load_families

    load_families()
    if name not in FAMILIES:
        raise KeyError(f"unknown backbone family {name!r}; registered: {sorted(FAMILIES)}")
    return FAMILIES[name]


def tiny_builders(name: str) -> list:
    """The tiny random builders of a family (for tests and the demo), e.g. Qwen2-VL's and
    Qwen2.5-VL's for the ``qwen2_vl`` family."""
    builders = []
    for path in family(name).tiny:
        module, _, attr = path.rpartition(".")
        builders.append(getattr(import_module(module), attr))
    return builders
