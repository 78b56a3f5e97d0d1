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


def stage_one_from(run: str | Path) -> tuple[dict | None, dict[str, Any]]:
    """LoRA settings and tuned tensors of a finished run, for ``stage.init_from``: only those
    of the groups the run trained (its LoRA; a prompt it built and left untrained stays behind,
    and the new run draws its own). The LoRA settings are the run's ``lora.json`` (or, for a
    folder written before it existed, its ``stage.lora``)."""
    import json

    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from iqa_lightning.phases import phase_entries

    run = Path(run).expanduser()
    folder = RunFolder(run)
    for path in (folder.config, folder.tuned):
        if not path.exists():
            raise FileNotFoundError(f"stage.init_from={str(run)!r}: no {path.relative_to(run)}")
    run_cfg = OmegaConf.load(folder.config)
    if folder.lora.exists():
        lora = json.loads(folder.lora.read_text())
    else:
        stage_lora = OmegaConf.select(run_cfg, "stage.lora", default=None)
        lora = OmegaConf.to_container(stage_lora) if stage_lora else None
    phases = next(
        (
            found
            for key in ("module.phases", "method.phases", "stage.phases")
            if (found := OmegaConf.select(run_cfg, key, default=None)) is not None
        ),
        None,
    )
    if phases is None:
        raise ValueError(
            f"stage.init_from={str(run)!r}: its {folder.config.relative_to(run)} names no phases "
            "(module.phases, method.phases or stage.phases)"
        )
    trained = {str(g) for phase in phase_entries(phases) for g in phase.get("trainable") or []}
    return lora, {"groups": trained | ({"lora"} if lora else set()),
                  "tensors": load_file(str(folder.tuned))}  # fmt: skip


def trained_tensors(module: Any, earlier: dict) -> dict:
    """The tensors of ``earlier`` (:func:`stage_one_from`) that belong to a group the earlier
    run trained, by this module's group names (``prompt`` names its prompter)."""
    groups = module.parameter_groups()
    wanted = {
        "prompter" if g == "prompt" and "prompter" in groups else g for g in earlier["groups"]
    }
    keep = {name for group in wanted & set(groups) for name in groups[group]}
    return {name: t for name, t in earlier["tensors"].items() if name in keep}


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


__all__ = [
    "MODULES",
    "Method",
    "method",
    "method_name",
    "method_of",
    "register",
    "stage_one_from",
    "trained_tensors",
]
