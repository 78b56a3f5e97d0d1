"""Score images with a finished run or zero-shot with a model preset (the Python API).

    from iqa_lightning.scorer import Scorer

    scorer = Scorer.from_run("outputs/runs/<run folder>")    # its tuned tensors
    scorer = Scorer.from_config(model="llava_1_5_7b", score="qalign")    # zero-shot
    scores = scorer(["photo.jpg", PIL.Image.open("other.png")])         # float32 tensor [2]

Images are decoded and resized exactly as the datasets do (``load_rgb``, then a bicubic resize to
the backbone's ``image_size``: ``resize="squash"``, the datasets' default, or
``"short_side_crop"``; :meth:`Scorer.from_run` takes the run's ``dataset.resize``). Scores lie in the score head's range ``[min(weights),
max(weights)]``, i.e. [0, 1] for every preset under ``conf/score/``, higher is better.

:func:`score_loader` is the one scoring path of the package: it runs ``Trainer.predict`` over a
dataloader through :class:`ScoringStep` (the module's forward on ``batch["pixels"]``) and
:class:`RowCollector` (one row per image, gathered across DDP ranks, in dataset order).
``python -m iqa_lightning.eval`` and ``python -m iqa_lightning.score`` use it as well.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import Dataset

from iqa_lightning.cli import ConfigError
from iqa_lightning.config_checks import check_native_size
from iqa_lightning.data import ImageLoadError, load_rgb
from iqa_lightning.data.dataset import make_loader
from iqa_lightning.data.images import array_to_tensor, check_resize, resize_to_array, to_rgb
from iqa_lightning.machine import resolve_workers
from iqa_lightning.progress import Progress
from iqa_lightning.quantization import trainer_options, with_quantization

log = logging.getLogger("iqa_lightning.score")

#: Batch keys holding the images themselves (the square, and each image at its own size).
IMAGE_KEYS = ("pixels", "images")


class ScoringStep(L.LightningModule):
    """The predict step of an :class:`~iqa_lightning.module.IQAModule`: scores ``[B]`` of a
    batch (:meth:`~iqa_lightning.module.IQAModule.score_output`: its pixels, and its image ids
    for a scorer that reads them).

    Args:
        model: The module (a rebuilt run or a zero-shot model).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        # A rank may get no image at all when there are fewer images than processes.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    @property
    def backbone(self) -> torch.nn.Module:
        """The model's backbone (what the FSDP wrap policy looks for)."""
        return self.model.backbone

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        return self.model.score_output(batch)


def _item(value: Any, i: int) -> Any:
    item = value[i]
    return item.item() if isinstance(item, torch.Tensor) else item


def _gather(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(parts, rows)
        rows = [row for part in parts for row in part]
    return rows


def _images_of_this_rank(trainer: L.Trainer) -> int | None:
    """How many images this process scores (its shard under DDP); None when unknown."""
    loaders = trainer.predict_dataloaders
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    try:
        return sum(len(loader.batch_sampler.sampler) for loader in loaders)
    except (AttributeError, TypeError):
        return None


class RowCollector(BasePredictionWriter):
    """One row per image of a predict run: ``index`` (position in the dataset), every per-image
    field of the batch except the image tensors (``pixels``, ``images``; the others are
    ``image_id``, ``mos_raw``, ...), ``score`` and the
    scorer's per-image extras (:attr:`ScoreOutput.extras`: a generated answer, whether it
    parsed, ...).

    After the run every rank holds every rank's rows in :attr:`rows`, sorted by ``index``:
    each image appears once (prediction shards are not padded).

    Args:
        progress: What the run is (``"scoring"``): rank 0 then reports its images done, rate and
            ETA (:class:`~iqa_lightning.progress.Progress`: a bar on a terminal, a log line at
            most every 30 s); None reports nothing.
    """

    def __init__(self, progress: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.rows: list[dict[str, Any]] = []
        #: The scorer's extras the rows carry, in first-seen order.
        self.extra_keys: list[str] = []
        self.progress = progress
        self._progress: Progress | None = None

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows, self.extra_keys = [], []
        if self.progress:
            what = self.progress
            if trainer.world_size > 1:
                what = f"{what} (rank 0 of {trainer.world_size})"
            self._close_progress()
            self._progress = Progress(what, total=_images_of_this_rank(trainer), unit="images",
                                      logger=log, enabled=trainer.is_global_zero)  # fmt: skip

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close_progress()

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        scores = prediction.scores.detach().float().cpu().tolist()
        if batch_indices is None or len(batch_indices) != len(scores):
            raise RuntimeError("Trainer.predict gave no dataset indices for a batch")
        for i, (index, score) in enumerate(zip(batch_indices, scores, strict=True)):
            row = {"index": int(index)}
            row.update({k: _item(v, i) for k, v in batch.items() if k not in IMAGE_KEYS})
            row["score"] = score
            row.update({k: _item(v, i) for k, v in prediction.extras.items()})
            self.rows.append(row)
        self.extra_keys += [k for k in prediction.extras if k not in self.extra_keys]
        if self._progress is not None:
            self._progress.update(len(scores))

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_progress()
        log.info(
            "rank %d/%d scored %d images", trainer.global_rank, trainer.world_size, len(self.rows)
        )
        self.rows = sorted(_gather(self.rows), key=lambda row: row["index"])


def score_loader(trainer: L.Trainer, module: torch.nn.Module, loader) -> list[dict[str, Any]]:
    """Score every image of ``loader`` with ``module`` through ``trainer.predict``.

    Args:
        trainer: A Trainer with a :class:`RowCollector` among its callbacks (any strategy;
            under DDP each rank scores its own unpadded shard).
        module: An :class:`~iqa_lightning.module.IQAModule`.
        loader: A DataLoader of dict batches with ``pixels`` ``[B, 3, S, S]`` in [0, 1].

    Returns:
        One row per image in dataset order, on every rank (see :class:`RowCollector`).
    """
    collector = row_collector(trainer)
    trainer.predict(ScoringStep(module), dataloaders=loader, return_predictions=False)
    return list(collector.rows)


def row_collector(trainer: L.Trainer) -> RowCollector:
    """The trainer's :class:`RowCollector` (its rows and the scorer extras they carry)."""
    collectors = [cb for cb in trainer.callbacks if isinstance(cb, RowCollector)]
    if not collectors:
        raise ValueError("score_loader needs a Trainer built with a RowCollector callback")
    return collectors[0]


def compose_scoring(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/scoring.yaml`` composed with ``overrides`` (``model=tiny_llava``, ...), as
    ``python -m iqa_lightning.score`` composes it (works inside another Hydra app too).

    Raises:
        ConfigError: An override names no preset or key; the message is Hydra's.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from iqa_lightning.build import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            return compose(config_name="scoring", overrides=list(overrides))
        except HydraException as err:
            raise ConfigError(str(err).splitlines()[0]) from err


def zero_shot_module(cfg: DictConfig) -> torch.nn.Module:
    """The frozen module of a scoring config (``model``, ``score``, ``prompt``; the one phase
    of ``module.phases`` trains nothing, so an untrained prompt stays as initialised)."""
    from iqa_lightning.build import build_module

    return build_module(cfg).eval()


def rali_module(rali: torch.nn.Module) -> torch.nn.Module:
    """A frozen module scoring with a :class:`~iqa_lightning.models.rali.RALIScorer` (one phase
    that trains nothing), for the scoring loop."""
    from iqa_lightning.distill.module import RALIModule

    phases = [{"name": "zero_shot", "trainable": []}]
    return RALIModule(rali, phases=phases, contrastive_phases=()).eval()


class ImageInputs(Dataset):
    """Images (paths or PIL images) as samples ``pixels`` / ``image`` / ``error`` (/ ``mos``,
    / ``images``: the image at its own size, with ``native_size``).

    An image that cannot be read gives black pixels and its reason in ``error`` (empty for the
    others), so one bad file never stops a run; callers drop and list those rows.

    Args:
        images: Files or PIL images.
        image_size: Side of the square the images are resized to (as the datasets do).
        names: Name of each image in the output (default: the path, or the PIL file name).
        mos: Subjective score of each image, when known.
        resize: ``squash`` or ``short_side_crop`` (:data:`~iqa_lightning.data.images.RESIZES`).
        native_size: Samples also carry ``images``, the decoded image at its own size (float32
            ``[3, H, W]`` in [0, 1]; 1x1 black for an image that cannot be read), as the
            datasets' ``dataset.native_size`` gives it.
    """

    def __init__(
        self,
        images: Sequence[str | Path | Image.Image],
        image_size: int,
        names: Sequence[str] | None = None,
        mos: Sequence[float] | None = None,
        resize: str = "squash",
        native_size: bool = False,
    ) -> None:
        self.images = list(images)
        self.image_size = int(image_size)
        self.resize = check_resize(resize)
        self.native_size = bool(native_size)
        self.names = [_name(x, i) for i, x in enumerate(self.images)] if names is None else names
        self.mos = None if mos is None else [float(m) for m in mos]
        for what, values in (("names", self.names), ("mos", self.mos)):
            if values is not None and len(values) != len(self.images):
                raise ValueError(f"{len(values)} {what} for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, error = self.images[index], ""
        try:
            img = image if isinstance(image, Image.Image) else load_rgb(image)
            array = resize_to_array(img, self.image_size, resize=self.resize)
        except ImageLoadError as err:
            error = err.reason or str(err)
            img = Image.new("RGB", (1, 1))
            array = resize_to_array(img, self.image_size)
        sample = {"pixels": array_to_tensor(array), "image": self.names[index], "error": error}
        if self.mos is not None:
            sample["mos"] = self.mos[index]
        if self.native_size:
            rgb = img if img.mode == "RGB" else to_rgb(img)
            sample["images"] = array_to_tensor(np.array(rgb, dtype=np.uint8))
        return sample


def run_native_size(run_cfg: DictConfig) -> bool:
    """Whether a run's dataset gave each image at its own size (``dataset.native_size``)."""
    return OmegaConf.select(run_cfg, "dataset.native_size", default=False) is True


def _name(image: Any, index: int) -> str:
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or f"<image {index}>"
    return str(image)


@dataclass
class Scores:
    """What :meth:`Scorer.score` returns.

    Attributes:
        images: The readable images' names, in input order.
        scores: Their scores, float32 ``[len(images)]``.
        mos: Their subjective scores, when given.
        skipped: ``(name, reason)`` of every image that could not be read.
        extras: The scorer's per-image extras by name (a generated answer, whether it parsed,
            a description), each a list parallel to ``images``.
    """

    images: list[str]
    scores: torch.Tensor
    mos: list[float] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extras: dict[str, list[Any]] = field(default_factory=dict)


def bare_trainer(**options: Any) -> L.Trainer:
    """A one-device Trainer with no logger, checkpoints, summary or progress bar, for drivers
    that only run ``predict`` (scoring, analyses).

    Args:
        **options: Trainer arguments (``accelerator``, ``precision``, ``callbacks``, ...).
    """
    settings = {
        "accelerator": "auto",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        **options,
    }
    return L.Trainer(**settings)


def scoring_trainer(**options: Any) -> L.Trainer:
    """:func:`bare_trainer` with a :class:`RowCollector` that reports its progress as
    ``scoring``, for :func:`score_loader`.

    Args:
        **options: Trainer arguments (``accelerator``, ``precision``, ``enable_progress_bar``).
    """
    return bare_trainer(callbacks=[RowCollector(progress="scoring")], **options)


class Scorer:
    """Scores images with an :class:`~iqa_lightning.module.IQAModule`.

    Args:
        module: The module (see :meth:`from_run`, :meth:`from_config`).
        image_size: The backbone's input size (``model.image_size``).
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes decoding the images (``auto``:
            :func:`iqa_lightning.machine.loader_workers`).
        resize: How images become squares: ``squash`` (the datasets' default) or
            ``short_side_crop``.
        native_size: Batches also carry ``images``, each image at its own size, which a
            generative scorer on a Qwen2-VL family backbone at its native resolution reads
            instead of the square (``native_size`` of the scoring CLI).
        trainer: A Trainer with a :class:`RowCollector` (e.g. DDP from a ``trainer`` preset);
            default: :func:`scoring_trainer` with ``trainer_options``.
        **trainer_options: Passed to :func:`scoring_trainer` (``accelerator="cpu"``,
            ``precision="bf16-mixed"``, ``enable_progress_bar=True``).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        image_size: int,
        batch_size: int = 8,
        num_workers: int | str = 0,
        resize: str = "squash",
        trainer: L.Trainer | None = None,
        native_size: bool = False,
        **trainer_options: Any,
    ) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size} must be a positive integer")
        self.module = module
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = resolve_workers(num_workers, "num_workers")
        try:
            self.resize = check_resize(resize)
        except ValueError as err:
            raise ConfigError(str(err).replace("dataset.resize", "resize")) from None
        self.native_size = bool(native_size)
        self.trainer = trainer if trainer is not None else scoring_trainer(**trainer_options)

    @classmethod
    def from_run(cls, run: str | Path, quantization: str | None = None, **kwargs: Any) -> Scorer:
        """The model of a finished train.py run folder, with its tuned tensors; images are resized
        as the run's dataset resized them (``dataset.resize``, ``dataset.native_size``) unless
        ``resize=`` / ``native_size=`` say otherwise.
        ``quantization="int8"`` or ``"int4"`` loads the run's checkpoint with integer weights
        (:mod:`iqa_lightning.quantization`)."""
        from omegaconf import OmegaConf

        from iqa_lightning.runs import load_run_config, rebuild_run

        run_cfg = load_run_config(run)
        module = rebuild_run(run, with_quantization(run_cfg, quantization, run))
        for key, value in trainer_options(quantization).items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("resize", OmegaConf.select(run_cfg, "dataset.resize", default="squash"))
        kwargs.setdefault("native_size", run_native_size(run_cfg))
        return cls(module, int(run_cfg.model.image_size), **kwargs)

    @classmethod
    def from_rali(
        cls,
        pretrained: str | Path,
        dtype: str = "float32",
        score_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> Scorer:
        """RALI's LLM-free scorer from a scorer folder (``scorer.json``) or RALI's release
        (``ckpt.pt``, ``pca.pkl``, ``basis.npz``, ``best/``); images are resized on the short
        side and centre-cropped, as CLIP's processor does, unless ``resize=`` says otherwise.

        Args:
            pretrained: The folder.
            dtype: The CLIP encoder's dtype.
            score_range: ``[lo, hi]`` of a release's basis scores (default [0, 1]).
            **kwargs: :class:`Scorer` arguments.
        """
        from iqa_lightning.models.rali import load_scorer

        rali = load_scorer(pretrained, dtype=dtype, score_range=score_range)
        kwargs.setdefault("resize", "short_side_crop")
        return cls(rali_module(rali), rali.image_size, **kwargs)

    @classmethod
    def from_config(
        cls,
        model: str | None = None,
        score: str | None = None,
        prompt: str | None = None,
        overrides: Sequence[str] = (),
        **kwargs: Any,
    ) -> Scorer:
        """A zero-shot scorer from presets of ``conf/model``, ``conf/score``, ``conf/prompt``.

        Args:
            model: A model preset (``"tiny_llava"``); default: ``conf/scoring.yaml``'s.
            score: A score head preset (``"qalign"``); default: the model preset's own head
                (a checkpoint preset such as ``one_align``) or ``conf/scoring.yaml``'s.
            prompt: A prompt preset; default ``"none"``.
            overrides: More Hydra overrides, e.g. ``["model.pretrained=/models/llava"]``.
            **kwargs: :class:`Scorer` arguments.
        """
        choices = {"model": model, "score": score, "prompt": prompt}
        chosen = [f"{group}={name}" for group, name in choices.items() if name is not None]
        cfg = compose_scoring([*chosen, *overrides])
        # The model's own pre-processing where it declares one (model.resize), as the score CLI.
        kwargs.setdefault("resize", cfg.model.get("resize") or "squash")
        kwargs.setdefault("native_size", cfg.get("native_size") is True)  # a method preset's
        check_native_size(kwargs["native_size"], cfg.get("prompt"), "native_size")
        for key, value in trainer_options(cfg.model.get("quantization")).items():
            kwargs.setdefault(key, value)
        return cls(zero_shot_module(cfg), int(cfg.model.image_size), **kwargs)

    def score(
        self,
        images: Sequence[str | Path | Image.Image],
        names: Sequence[str] | None = None,
        mos: Sequence[float] | None = None,
    ) -> Scores:
        """Score images, listing (not raising on) those that cannot be read.

        Args:
            images: Files or PIL images.
            names: Their names in the result (default: the paths).
            mos: Their subjective scores, carried into the result.
        """
        dataset = ImageInputs(images, self.image_size, names=names, mos=mos, resize=self.resize,
                              native_size=self.native_size)  # fmt: skip
        loader = make_loader(dataset, self.batch_size, self.num_workers, shuffle=False)
        rows = score_loader(self.trainer, self.module, loader) if len(dataset) else []
        extras = row_collector(self.trainer).extra_keys if rows else []
        good = [row for row in rows if not row["error"]]
        return Scores(
            images=[row["image"] for row in good],
            scores=torch.tensor([row["score"] for row in good], dtype=torch.float32),
            mos=None if mos is None else [row["mos"] for row in good],
            skipped=[(row["image"], row["error"]) for row in rows if row["error"]],
            extras={k: [row.get(k) for row in good] for k in extras},
        )

    def __call__(self, images: Sequence[str | Path | Image.Image]) -> torch.Tensor:
        """Scores ``[len(images)]`` (float32) of files or PIL images.

        Raises:
            ImageLoadError: Some image cannot be read; the message names each such file.
        """
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        result = self.score(images)
        if result.skipped:
            shown = "; ".join(f"'{name}': {why}" for name, why in result.skipped[:5])
            more = f" and {len(result.skipped) - 5} more" if len(result.skipped) > 5 else ""
            raise ImageLoadError(
                f"{len(result.skipped)} of {len(images)} image(s) cannot be read: {shown}{more}",
                path=result.skipped[0][0],
                reason=result.skipped[0][1],
            )
        return result.scores
