"""From a train config to a :class:`~iqa_lightning.distill.module.RALIModule` (``stage=rali``).

:func:`prepare` runs RALI's construction steps (arXiv 2510.11369) on the training split, before
anything trains, and leaves each result in the run folder::

    teacher texts     distill/teacher_texts.jsonl      (teacher.texts: the user's file instead)
    text embeddings   distill/text_embeddings.safetensors   ([N, D] "embeddings", ids in metadata)
    PCA + basis       distill/init/                    (RALIScorer.save: the untrained scorer)
    summary           distill/summary.json             (counts, explained variance, basis sizes)

Under DDP the first process prepares and writes ``distill/prepared.json`` last; the others wait
for it and read the same files, so every process starts from the same scorer.
:func:`prepare` is the method's preparation step (:meth:`~iqa_lightning.methods.rali.RALI.prepare`,
called by the build layer before the module is built); :func:`build_rali_module` then builds the
module from those files alone. Rebuilding a finished run (eval, scoring) reads the run's
exported ``scorer/`` instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from iqa_lightning.errors import ConfigError
from iqa_lightning.files import save_tensors
from iqa_lightning.run_folder import RunFolder

log = logging.getLogger(__name__)

__all__ = ["build_rali_module", "load_embeddings", "prepare", "save_embeddings"]

DISTILL = RunFolder.DISTILL.name
DONE = "prepared.json"
EMBEDDINGS = "text_embeddings.safetensors"


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))


def save_embeddings(path: Path, embeddings: torch.Tensor, ids: list[str]) -> None:
    metadata = {"image_ids": json.dumps(ids)}
    save_tensors({"embeddings": embeddings.contiguous()}, path, metadata=metadata)


def load_embeddings(path: Path) -> tuple[torch.Tensor, list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        ids = json.loads(f.metadata()["image_ids"])
        return f.get_tensor("embeddings"), ids


def teacher_texts(teacher: Any, datamodule, folder: Path) -> tuple[dict[str, str], str]:
    """Texts of the training images: the user's file (``teacher.texts``) or the teacher's
    answers (cached in ``teacher.cache``); and a description of where they came from."""
    from iqa_lightning.distill.teacher import build_teacher, generate_texts
    from iqa_lightning.distill.texts import TextCache, check_texts, read_texts

    items = datamodule.dataset("train").items
    ids = [item.image_id for item in items]
    if teacher.get("texts"):
        texts = read_texts(teacher.texts)
        check_texts(texts, ids, f"teacher.texts={teacher.texts}")
        return {i: texts[i] for i in ids}, f"texts {teacher.texts}"
    if teacher.get("model") is None and not teacher.get("run"):
        raise ConfigError(
            "stage=rali needs teacher texts: teacher=<preset> (e.g. tiny_llava), "
            "teacher.run=<LMM run folder>, or teacher=texts teacher.texts=<jsonl>"
        )
    device = _device(str(teacher.get("device", "auto")))
    model = teacher.get("model")
    lmm = build_teacher(
        model, teacher.get("run"), int(teacher.max_new_tokens), device, teacher.get("generation")
    )
    cache = TextCache(teacher.get("cache") or folder / "teacher_texts.jsonl")
    texts = generate_texts(
        lmm, items, cache, str(teacher.question), int(teacher.batch_size),
        resize=datamodule.resize,
    )  # fmt: skip
    del lmm
    return texts, lmm_description(teacher)


def lmm_description(teacher: Any) -> str:
    if teacher.get("run"):
        return f"run {teacher.run}"
    model = teacher.model
    return str(model.get("pretrained") or model.get("_target_"))


def prepare(cfg: Any, datamodule, out: Path) -> Path:
    """Teacher texts -> text embeddings -> PCA -> basis -> ``distill/init/`` (module docstring).

    Returns:
        The ``distill`` folder.
    """
    from hydra.utils import instantiate

    from iqa_lightning.models.rali.basis import bucketed_basis, random_basis
    from iqa_lightning.models.rali.pca_fit import fit_pca, identity_pca
    from iqa_lightning.models.rali.scorer import RALIScorer
    from iqa_lightning.models.rali.text import TextEmbedder

    stage = cfg.stage
    folder = RunFolder(out).distill
    done = folder / DONE
    if _rank() > 0:
        return _wait_for(done)
    done.unlink(missing_ok=True)
    texts, source = teacher_texts(cfg.teacher, datamodule, folder)
    items = datamodule.dataset("train").items
    ids = [item.image_id for item in items]
    targets = torch.tensor([item.target for item in items])

    encoder = instantiate(cfg.rali_encoder)
    embedder = TextEmbedder.from_encoder(encoder, int(stage.text.window))
    embedder.to(_device(str(stage.text.get("device", "auto"))))
    started = time.perf_counter()
    embeddings = embedder([texts[i] for i in ids], int(stage.text.batch_size))
    log.info("embedded %d teacher texts in %.1fs", len(ids), time.perf_counter() - started)
    save_embeddings(folder / EMBEDDINGS, embeddings, ids)

    width = embeddings.shape[1]
    use_pca = bool(stage.pca.enabled)
    if use_pca:
        dim = int(stage.pca.dim)
        top = min(len(ids) - 1, width)
        if not 1 <= dim <= top:
            raise ConfigError(
                f"stage.pca.dim={dim}: must be between 1 and {top} (the {len(ids)} training "
                f"texts and the encoder's {width}-d embeddings allow no more)"
            )
        pca = fit_pca(embeddings, dim)
    else:
        pca = identity_pca(width)
    projected = F.normalize(pca.transform(embeddings), dim=1)
    basis_cfg = stage.basis
    if basis_cfg.init == "kmeans":
        try:
            basis = bucketed_basis(
                projected, targets, int(basis_cfg.size), int(basis_cfg.buckets),
                int(basis_cfg.seed), int(basis_cfg.iterations),
            )  # fmt: skip
        except ValueError as err:
            raise ConfigError(str(err)) from err
    elif basis_cfg.init == "random":
        basis = random_basis(int(basis_cfg.size), projected.shape[1], int(basis_cfg.seed))
    else:
        raise ConfigError(f"stage.basis.init={basis_cfg.init!r} must be kmeans or random")

    scorer = RALIScorer(
        encoder.model, pca.mean, pca.scale, pca.components, basis.vectors, basis.scores,
        tau=float(stage.tau), image_size=encoder.image_size, image_mean=encoder.image_mean,
        image_std=encoder.image_std, score_range=(0.0, 1.0), use_pca=use_pca,
    )  # fmt: skip
    provenance = provenance_of(cfg, source, len(ids))
    scorer.save(folder / "init", provenance)
    summary = {
        "teacher": source,
        "train_images": len(ids),
        "distinct_texts": len(set(texts[i] for i in ids)),
        "text_windows_mean": sum(len(embedder.windows(texts[i])) for i in ids) / len(ids),
        "feature_dim": width,
        "pca_dim": int(pca.components.shape[0]) if use_pca else None,
        "pca_explained_variance": float(pca.explained_variance_ratio.sum()) if use_pca else None,
        "basis_vectors": len(basis.vectors),
        "basis_buckets": len(set(basis.buckets.tolist())),
        "basis_score_min": float(basis.scores.min()),
        "basis_score_max": float(basis.scores.max()),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    done.write_text(json.dumps({"ok": True}) + "\n")
    log.info("distillation prepared: %s", summary)
    return folder


def _wait_for(done: Path, timeout: float = 24 * 3600.0) -> Path:
    start = time.monotonic()
    while not done.exists():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{done}: the first process never finished preparing")
        time.sleep(2.0)
    return done.parent


def provenance_of(cfg: Any, source: str, count: int) -> dict[str, Any]:
    """What ``scorer.json`` records about the scorer's origin."""
    from omegaconf import OmegaConf

    encoder = OmegaConf.to_container(cfg.rali_encoder, resolve=True)
    return {
        "method": "RALI (arXiv 2510.11369)",
        "teacher": source,
        "dataset": str(cfg.dataset.get("name")),
        "train_images": count,
        "run": str(cfg.paths.output_dir),
        "encoder": encoder,
        "text_window": int(cfg.stage.text.window),
        "pca": OmegaConf.to_container(cfg.stage.pca, resolve=True),
        "basis": OmegaConf.to_container(cfg.stage.basis, resolve=True),
    }


def build_rali_module(cfg: Any, run: Path | None = None):
    """The :class:`~iqa_lightning.distill.module.RALIModule` of a ``method=rali`` config.

    Args:
        cfg: The train config; a new run reads what :func:`prepare` left in its folder.
        run: A finished run to rebuild: its ``scorer/`` is read and nothing is prepared.

    Raises:
        ConfigError: A new run whose folder was not prepared.
    """
    from hydra.utils import instantiate

    from iqa_lightning.distill.module import RALIModule
    from iqa_lightning.models.rali.scorer import RALIScorer

    stage = cfg.stage
    phases = instantiate(stage.phases, _convert_="all")  # optimiser / scheduler factories
    options = {"phases": phases, "loss": cfg.module.get("loss", "mse")}
    if run is not None:
        folder = RunFolder(run).scorer
        if not folder.is_dir():
            folder = RunFolder(run).distill / "init"
        return RALIModule(RALIScorer.load(folder), contrastive_phases=(), **options)
    out = RunFolder(cfg.paths.output_dir)
    folder = out.distill
    if not (folder / DONE).is_file():
        raise ConfigError(
            f"{folder}: not prepared; a new RALI run prepares its scorer first "
            "(methods.method('rali').prepare(cfg, datamodule, out), as train does)"
        )
    embeddings, ids = load_embeddings(folder / EMBEDDINGS)
    contrastive = stage.contrastive
    return RALIModule(
        RALIScorer.load(folder / "init"),
        text_embeddings=embeddings,
        text_ids=ids,
        contrastive_phases=list(contrastive.phases or []),
        temperature=float(contrastive.temperature),
        export_dir=str(out.scorer),
        provenance=json.loads((folder / "init" / "scorer.json").read_text())["provenance"],
        **options,
    )
