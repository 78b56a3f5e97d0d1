"""Methods: how a run's LightningModule is built from the composed config.

A method is one module here plus one option of the ``method`` config group
(``conf/method/<name>.yaml``, whose ``method.name`` names it). The module defines a
:class:`Method` subclass and registers it with :func:`register`; the drivers (train, eval, score,
analyze) only call :func:`method_of` and the :class:`Method` interface, so adding a method never
edits them.

    python train.py method=probe experiment=demo

Registered today: ``word_score`` (the default: pixel prompts, LoRA, Q-Adapt, progressive tuning,
perception-then-inference, Q-Align-style level losses; one frozen LMM scored through its quality
words), ``rali`` (an LLM-free CLIP scorer distilled from a teacher) and ``probe`` (a regression
head on the frozen backbone's pooled vision features), ``generative`` (scores parsed from generated
answers, the reasoning IQA models' inference) and ``grpo`` (GRPO on those answers' rewards).
"""

from __future__ import annotations

import abc
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar

from iqa_lightning.run_folder import RunFolder

#: Method name -> module under this package that registers it (imported on first use, so a run
#: imports only its own method's code).
MODULES = {
    "word_score": "word_score",
    "rali": "rali",
    "probe": "probe",
    "generative": "generative",
    "grpo": "grpo",
}

_REGISTRY: dict[str, type[Method]] = {}


class Method(abc.ABC):
    """How one method builds its module; subclass it in ``iqa_lightning/methods/<name>.py``.

    Attributes:
        name: The ``method.name`` that picks it.
        rebuild_files: Files (relative to the run folder) a finished run must hold for
            :meth:`build_module` with ``run=`` to rebuild it.
    """

    name: ClassVar[str] = ""
    rebuild_files: ClassVar[tuple[str, ...]] = (RunFolder.TUNED.as_posix(),)

    def prepare(self, cfg: Any, datamodule: Any, out: Path) -> list[Path]:
        """Steps a new run takes on its training data before its module is built, each
        leaving its artefact in the run folder ``out`` and skipped when the artefact is there
        (RALI: teacher texts, text embeddings, PCA and basis). Every process of a DDP run calls
        it. Returns the artefacts written or found; this base method has no step.
        """
        return []

    @abc.abstractmethod
    def build_module(self, cfg: Any, run: Path | None = None, datamodule: Any = None):
        """The LightningModule of ``cfg``: a new run's (after :meth:`prepare`, from what it
        left in ``cfg.paths.output_dir``), or a finished ``run``'s rebuilt from its files.

        Args:
            cfg: The composed train config.
            run: A finished run folder to rebuild (its saved files are read, nothing is
                trained or prepared again).
            datamodule: The run's data, set up (for a method whose module reads it).
        """

    def missing_files(self, run: Path) -> list[str]:
        """The :attr:`rebuild_files` ``run`` lacks."""
        return [name for name in self.rebuild_files if not (Path(run) / name).exists()]


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` the method named ``cls.name``.

    Raises:
        ValueError: No name, or the name is taken by another class.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if _REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method(name: str) -> Method:
    """The registered method ``name`` (its module imported on first use).

    Raises:
        ValueError: An unknown name; the message lists the known ones.
    """
    if name not in _REGISTRY and name in MODULES:
        import_module(f"{__name__}.{MODULES[name]}")  # registers itself
    if name not in _REGISTRY:
        known = sorted(set(MODULES) | set(_REGISTRY))
        raise ValueError(f"method.name={name!r} is not a method; known: {', '.join(known)}")
    return _REGISTRY[name]()


def method_name(cfg: Any) -> str:
    """``method.name`` of a config; run folders written before the ``method`` group existed
    name RALI by ``stage.scorer: rali`` and everything else was word-score tuning."""
    chosen = (cfg.get("method") or {}).get("name")
    if chosen:
        return str(chosen)
    return "rali" if (cfg.get("stage") or {}).get("scorer") == "rali" else "word_score"


def method_of(cfg: Any) -> Method:
    """The method a composed config (or a run's saved config) uses."""
    return method(method_name(cfg))


__all__ = ["MODULES", "Method", "method", "method_name", "method_of", "register"]
