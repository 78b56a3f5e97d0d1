"""Reading RALI scorers from disk: RALI's release and this package's scorer folders.

RALI (arXiv 2510.11369, https://arxiv.org/abs/2510.11369) releases, as bytedance/Q-Insight's
``src/eval/demo_rali_score.py`` reads them::

    checkpoints/ckpt.pt      {"state_dict": ...} of CLIP_IQA_Proto: clip.* (the whole CLIPModel)
                             and scorer.{pca_scale, pca_components, prototypes, proto_scores,
                             logit_scale}
    checkpoints/pca.pkl      joblib.dump of a scikit-learn PCA (mean_, components_[, var_])
    checkpoints/basis.npz    vectors [K, d], scores [K]
    checkpoints/best/        a CLIP folder (config.json, preprocessor_config.json, weights)

The reference builds its scorer from ``pca.pkl`` and ``basis.npz`` and then loads ``ckpt.pt``
over it (strictly), so every value ``ckpt.pt`` holds wins: the PCA scale and components, the
basis vectors and scores, the temperature (``tau = 1 / clamp(logit_scale, 1e-6)``) and the CLIP
weights. The PCA mean is a plain tensor attribute there, not in any state dict: it comes only
from ``pca.pkl``. Where ``ckpt.pt`` lacks a value the reference's initial one is used:
``sqrt(pca.var_)`` (entries below 1e-10 set to 1) or ones for the scale, ``components_``,
``basis.npz`` and tau 0.07. The CLIP folder gives the architecture and the image statistics;
its weights are not read (``ckpt.pt`` replaces them in the reference too).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_lightning.errors import ConfigError
from iqa_lightning.models.rali.clip import preprocessor_settings
from iqa_lightning.models.rali.pca_pickle import load_pca

log = logging.getLogger(__name__)

PUBLISHED_FILES = {"ckpt": "ckpt.pt", "pca": "pca.pkl", "basis": "basis.npz"}
# This package's scorer folder (:meth:`RALIScorer.save` writes it, :func:`read_saved` reads it).
FORMAT = "iqa-lightning/rali-scorer"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "scorer.json"
CLIP_FOLDER = "best"
SCORER_KEYS = ("pca_scale", "pca_components", "prototypes", "proto_scores", "logit_scale")
DEFAULT_TAU = 0.07  # CLIP_IQA_Proto's tau, the initial logit_scale = 1 / tau


class PublishedFormatError(ConfigError):
    """A file of a RALI release or scorer folder that does not hold what it should."""


def _clip_folder(folder: Path) -> Path:
    for candidate in (folder / CLIP_FOLDER, folder):
        if (candidate / "config.json").is_file():
            return candidate
    found = sorted(p.parent for p in folder.glob("*/config.json"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"{folder}: no CLIP folder (a {CLIP_FOLDER}/ with config.json); give clip=<folder>"
    )


def published_paths(
    folder: str | Path | None = None, **paths: str | Path | None
) -> dict[str, Path | None]:
    """``ckpt``, ``pca``, ``basis``, ``clip`` paths of a release (keywords override ``folder``);
    ``basis`` is None when there is no ``basis.npz``."""
    root = Path(folder) if folder is not None else None
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of RALI files")
    out: dict[str, Path | None] = {}
    for key, name in PUBLISHED_FILES.items():
        given = paths.get(key)
        if given is not None:
            out[key] = Path(given)
        elif root is not None:
            out[key] = root / name
        else:
            raise ConfigError(f"RALI files: give a folder or {key}=<path to {name}>")
    clip = paths.get("clip")
    if clip is not None:
        out["clip"] = Path(clip)
    elif root is not None:
        out["clip"] = _clip_folder(root)
    else:
        raise ConfigError("RALI files: give a folder or clip=<CLIP folder>")
    for key in ("ckpt", "pca"):
        if not out[key].is_file():
            raise FileNotFoundError(f"{out[key]}: no such file (RALI's {PUBLISHED_FILES[key]})")
    if not (out["clip"] / "config.json").is_file():
        raise FileNotFoundError(f"{out['clip'] / 'config.json'}: no such file (the CLIP config)")
    if not out["basis"].is_file():
        out["basis"] = None
    return out


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``ckpt.pt`` (``{"state_dict": ...}``), loaded with ``weights_only``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PublishedFormatError(
            f"{path}: not a weights-only torch checkpoint ({first})"
        ) from err
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PublishedFormatError(f"{path}: expected {{'state_dict': {{name: tensor}}}}")
    return state


def read_basis(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``vectors`` ``[K, d]`` and ``scores`` ``[K]`` of ``basis.npz`` (no pickles allowed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("vectors", "scores") if k not in data.files]
            if missing:
                raise PublishedFormatError(f"{path}: no {missing} array; it has {data.files}")
            return np.asarray(data["vectors"]), np.asarray(data["scores"])
    except PublishedFormatError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise PublishedFormatError(f"{path}: not a readable .npz of arrays ({err})") from err


def _pca_values(path: Path) -> dict[str, np.ndarray]:
    pca = load_pca(path)
    mean = np.asarray(pca.mean_, dtype=np.float64)
    var = getattr(pca, "var_", None)
    scale = np.sqrt(np.asarray(var, dtype=np.float64)) if var is not None else np.ones_like(mean)
    scale[scale < 1e-10] = 1.0
    components = np.asarray(pca.components_, dtype=np.float64)
    if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
        raise PublishedFormatError(
            f"{path}: mean_ {mean.shape} and components_ {components.shape} do not fit together"
        )
    return {"pca_mean": mean, "pca_scale": scale, "pca_components": components}


def _vision(clip_folder: Path, state: dict[str, torch.Tensor], ckpt: Path, dtype: str):
    from transformers import CLIPConfig, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPConfig.from_pretrained(clip_folder)
    vision_config = CLIPVisionConfig(
        **{**config.vision_config.to_dict(), "projection_dim": config.projection_dim}
    )
    weights = {
        k[len("clip.") :]: v
        for k, v in state.items()
        if k.startswith(("clip.vision_model.", "clip.visual_projection."))
    }
    model = CLIPVisionModelWithProjection(vision_config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(weights))
    if missing:
        raise PublishedFormatError(
            f"{ckpt}: no CLIP image weights {['clip.' + k for k in missing[:3]]} "
            f"({len(missing)} missing) for the config in {clip_folder}"
        )
    try:
        model.load_state_dict({k: weights[k] for k in expected}, strict=True)
    except RuntimeError as err:
        raise PublishedFormatError(
            f"{ckpt}: CLIP weights do not fit {clip_folder / 'config.json'}: "
            f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}"
        ) from err
    return model.to(getattr(torch, dtype)).eval()


def read_published(
    folder: str | Path | None = None, dtype: str = "float32", **paths: str | Path | None
) -> dict[str, Any]:
    """:class:`RALIScorer` arguments from RALI's release (the precedence in the module doc).

    Args:
        folder: The release folder (``ckpt.pt``, ``pca.pkl``, ``basis.npz``, ``best/``).
        dtype: The encoder's dtype.
        **paths: ``ckpt``, ``pca``, ``basis``, ``clip`` paths overriding the folder's.

    Raises:
        FileNotFoundError: ``ckpt.pt``, ``pca.pkl`` or the CLIP config is missing.
        UnsafePickleError: ``pca.pkl`` asks for a global a PCA does not need.
        PublishedFormatError: A file does not hold what RALI's does; the message names it.
    """
    found = published_paths(folder, **paths)
    state = read_checkpoint(found["ckpt"])
    values: dict[str, Any] = _pca_values(found["pca"])
    if found["basis"] is not None:
        values["basis"], values["basis_scores"] = read_basis(found["basis"])
    # ckpt.pt is loaded last in the reference: its values win.
    scorer = {k[len("scorer.") :]: v for k, v in state.items() if k.startswith("scorer.")}
    renames = {"prototypes": "basis", "proto_scores": "basis_scores"}
    for key in ("pca_scale", "pca_components", "prototypes", "proto_scores"):
        if key in scorer:
            values[renames.get(key, key)] = scorer[key].float()
    if "basis" not in values or "basis_scores" not in values:
        raise PublishedFormatError(
            f"{found['ckpt']}: no scorer.prototypes / scorer.proto_scores, and no basis.npz "
            "beside it"
        )
    tau = DEFAULT_TAU
    if "logit_scale" in scorer:
        tau = float(1.0 / scorer["logit_scale"].float().clamp(min=1e-6))
    if not math.isfinite(tau):
        raise PublishedFormatError(f"{found['ckpt']}: scorer.logit_scale gives tau={tau}")
    vision = _vision(found["clip"], state, found["ckpt"], dtype)
    settings = preprocessor_settings(found["clip"])
    if settings["image_size"] != vision.config.image_size:
        log.warning(
            "%s: crop size %d differs from the vision config's image size %d",
            found["clip"], settings["image_size"], vision.config.image_size,
        )  # fmt: skip
    log.info("RALI release %s: K=%d, tau=%.4f", found["ckpt"].parent, len(values["basis"]), tau)
    return {"vision": vision, **values, "tau": tau, **settings}


def read_saved(cls: type, folder: Path, dtype: str = "float32"):
    """A scorer written by :meth:`RALIScorer.save` (``scorer.json`` + ``model.safetensors``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config_file, weights_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file (a RALI scorer folder holds both "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE})")  # fmt: skip
    try:
        info = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PublishedFormatError(f"{config_file}: not valid JSON ({err})") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise PublishedFormatError(f"{config_file}: not a {FORMAT} file (format key)")
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as err:
        raise PublishedFormatError(
            f"{weights_file}: not a readable safetensors file ({err})"
        ) from err
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(info["clip_vision_config"]))
    own = ("pca_mean", "pca_scale", "pca_components", "basis", "basis_scores")
    missing = [k for k in own if k not in tensors]
    if missing:
        raise PublishedFormatError(f"{weights_file}: no tensor {missing}")
    scorer = cls(
        vision.to(getattr(torch, dtype)),
        *(tensors[k] for k in own),
        tau=info["tau"],
        image_size=info["image_size"],
        image_mean=info["image_mean"],
        image_std=info["image_std"],
        score_range=info["score_range"],
        use_pca=info.get("use_pca", True),
    )
    result = scorer.load_state_dict(tensors, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise PublishedFormatError(
            f"{weights_file}: missing {result.missing_keys[:3]}, unknown "
            f"{result.unexpected_keys[:3]} for the config in {config_file}"
        )
    scorer.provenance = info.get("provenance", {})
    return scorer.eval()


__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "PUBLISHED_FILES",
    "WEIGHTS_FILE",
    "PublishedFormatError",
    "published_paths",
    "read_basis",
    "read_checkpoint",
    "read_published",
    "read_saved",
]
