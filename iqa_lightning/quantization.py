"""Quantised inference: ``model.quantization=int8|int4`` for scoring and evaluation.

    python -m iqa_lightning.score images=photos/ model=one_align model.quantization=int8
    python -m iqa_lightning.eval run=<run folder> model.quantization=int4

The checkpoint's linear layers are loaded with 8- or 4-bit integer weights (per-channel scales;
activations stay in ``model.dtype``) through optimum-quanto, the library behind transformers'
``QuantoConfig``: it runs on CPU and GPU alike (``pip install 'iqa-lightning[quantization]'``).
The embeddings and the output head stay in ``model.dtype`` (transformers keeps them), so the
level words' logits are read from an unquantised head. A 7B mPLUG-Owl2 (One-Align, Q-Align,
DeQA-Score) then holds about 7 GB of weights in int8 instead of 14 GB in bf16.

Only weights loaded from a checkpoint are quantised: every backbone family loads them through
:func:`~iqa_lightning.models.backbones.loading.load_pretrained`, which asks
:func:`loading_kwargs` here for the ``quantization_config``. A model built from a config (the
random tiny ones) or not loaded through transformers' ``from_pretrained`` (RALI's CLIP scorer)
is refused with a clear error, and so is training a quantised model: the weights are frozen
integers, and LoRA or a prompt trained on them would not transfer to the full-precision model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from iqa_lightning.errors import ConfigError

#: ``model.quantization`` values: the integer width of the weights (optimum-quanto's ``weights``).
QUANTIZATIONS = ("int8", "int4")
KEY = "model.quantization"
EXTRA = "pip install 'iqa-lightning[quantization]' (optimum-quanto)"


@dataclass
class _Request:
    name: str
    loaded: list[str] = field(default_factory=list)


_REQUEST: ContextVar[_Request | None] = ContextVar("iqa_quantization", default=None)


def check_name(name: Any) -> str | None:
    """``name`` when it is a known quantisation (or None for none).

    Raises:
        ConfigError: Any other value, naming the key and the choices.
    """
    if name is None:
        return None
    if name not in QUANTIZATIONS:
        raise ConfigError(f"{KEY}={name!r} must be one of {', '.join(QUANTIZATIONS)} (or null)")
    return str(name)


def quantization_config(name: str):
    """transformers' ``QuantoConfig`` for ``int8`` or ``int4`` weights.

    Raises:
        ConfigError: optimum-quanto is not installed (the message gives the install command).
    """
    try:  # optimum-quanto: an optional, heavy dependency, imported only when asked for
        import optimum.quanto  # noqa: F401
    except ImportError:
        raise ConfigError(f"{KEY}={name} needs optimum-quanto: {EXTRA}") from None
    from transformers import QuantoConfig  # heavy: only when quantising

    return QuantoConfig(weights=check_name(name))


def loading_kwargs(loader: Any, what: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of a ``loader.from_pretrained`` call, with the ``quantization_config`` of the
    quantisation asked for (:func:`quantized_loading`) when ``loader`` is a transformers model
    class; unchanged otherwise (tokenizers, configs, image processors, no quantisation)."""
    request = _REQUEST.get()
    if request is None or not isinstance(loader, type):
        return kwargs
    from transformers import PreTrainedModel  # loaded by then: the loader is a model class

    if not issubclass(loader, PreTrainedModel):
        return kwargs
    request.loaded.append(what)
    return {**kwargs, "quantization_config": quantization_config(request.name)}


@contextmanager
def quantized_loading(name: str | None, model: str = "the model") -> Iterator[None]:
    """Within the block, checkpoints loaded through ``load_pretrained`` get ``name``'s weights.

    Args:
        name: ``int8``, ``int4``, or None (nothing changes).
        model: What is built, for the error message (``model=tiny_llava``).

    Raises:
        ConfigError: ``name`` is unknown, optimum-quanto is missing, or nothing in the block
            loaded a checkpoint that could be quantised.
    """
    if check_name(name) is None:
        yield
        return
    quantization_config(name)  # optimum-quanto present: fail before anything is loaded
    request = _Request(name)
    token = _REQUEST.set(request)
    try:
        yield
    finally:
        _REQUEST.reset(token)
    if not request.loaded:
        raise ConfigError(
            f"{KEY}={name}: {model} loads no checkpoint through transformers' from_pretrained "
            "(a model built from a config, such as the random tiny ones, or RALI's CLIP "
            "scorer), so there are no weights to quantise; use a checkpoint preset "
            "(model=tiny_llava_trained, one_align, ...) or leave the key out"
        )


def trainer_options(name: str | None) -> dict[str, Any]:
    """Trainer arguments a quantised model scores under: ``torch.no_grad`` rather than
    ``torch.inference_mode`` (optimum-quanto's packed int4 weights cannot be read in inference
    mode on CPU); none without quantisation."""
    return {} if check_name(name) is None else {"inference_mode": False}


def _trains(cfg: DictConfig) -> bool:
    phases = OmegaConf.select(cfg, "module.phases") or []
    phases = phases.values() if hasattr(phases, "values") else phases  # by name, or a list
    return any(phase.get("trainable") for phase in phases)


@contextmanager
def applied(cfg: DictConfig, rebuilt: bool = False) -> Iterator[DictConfig]:
    """The config to build a module from, with ``model.quantization`` taken out (the backbone
    loaders do not take it), and the loaders quantising within the block when it is set.

    Args:
        cfg: A train, scoring or rebuilt run's config.
        rebuilt: The module is a finished run rebuilt for inference (its phases say how it was
            trained, not that it trains now).

    Raises:
        ConfigError: Quantisation asked for a module that trains, or see
            :func:`quantized_loading`.
    """
    model = cfg.get("model")
    if not isinstance(model, DictConfig) or "quantization" not in model:
        yield cfg
        return
    name = check_name(model.quantization)
    if name is not None and not rebuilt and _trains(cfg):
        raise ConfigError(
            f"{KEY}={name} is for scoring and evaluation (python -m iqa_lightning.score / "
            "eval); training needs the full-precision weights: leave it out of train.py"
        )
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg.model):
        del cfg.model["quantization"]
    target = str(cfg.model.get("_target_", "the model")).rsplit(".", 2)
    with quantized_loading(name, f"the model ({'.'.join(target[-2:])})"):
        yield cfg


def with_quantization(run_cfg: DictConfig, name: str | None, run: Any = "the run") -> DictConfig:
    """A finished run's config with ``model.quantization=name`` (a copy; unchanged for None),
    for evaluating or scoring the run quantised.

    Raises:
        ConfigError: ``name`` is unknown, or the run's model is no backbone preset (a RALI
            scorer's ``model: ${rali_encoder}``).
    """
    if check_name(name) is None:
        return run_cfg
    if OmegaConf.is_interpolation(run_cfg, "model") or "_target_" not in run_cfg.model:
        raise ConfigError(
            f"{KEY}={name}: run={run} scores without an LMM backbone (its model is "
            f"{OmegaConf.to_container(run_cfg).get('model')!r}); there is nothing to quantise"
        )
    run_cfg = copy.deepcopy(run_cfg)
    with open_dict(run_cfg.model):
        run_cfg.model.quantization = name
    return run_cfg


def weight_bytes(module: Any) -> int:
    """Bytes held by a module's weights and buffers as stored (a quantised weight counts its
    integer data and its scales), e.g. for comparing int8 with fp32."""
    return sum(_stored_bytes(t) for t in module.state_dict().values())


def _stored_bytes(tensor: Any) -> int:
    if hasattr(tensor, "__tensor_flatten__"):  # a quantised tensor: its inner tensors
        names, _ = tensor.__tensor_flatten__()
        return sum(_stored_bytes(getattr(tensor, n)) for n in names)
    return tensor.numel() * tensor.element_size()
