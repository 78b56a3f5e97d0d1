"""Scoring driver: score a folder, an image or a list of images, with a run or zero-shot.

    python -m iqa_lightning.score images=photos/ model=llava_1_5_7b score=qalign out=scores.csv
    python -m iqa_lightning.score images=koniq_test.csv run=outputs/runs/<run> out=scores.csv
    python -m iqa_lightning.score images=list.json run=<run> trainer=ddp batch_size=32

``images=`` is a folder (every file below it with an image extension), one image file, or a list:
a CSV with a header, a JSON list of paths or of objects, or a text file with one path per line.
The image column / key is found among ``img_path, image, image_name, ..., path, file`` (the keys
``dataset=table`` detects, then plain path names; ``image_key=`` names it) and the MOS, when there
is one, among ``gt_score, mos, MOS, score, dmos, mos_quality`` (any case; ``mos_key=`` names it,
``mos_key=none`` ignores it). Relative paths in a list are
under ``image_root=`` (default: the list's folder).

Writes ``out`` (``image,score``, plus ``mos`` for a list with MOS; one row per readable image,
in list order), ``<out stem>_skipped.csv`` (``image,reason`` of every image that could not be
read, a folder's dangling symlinks and other entries that are no readable file among them; also
printed) and, with MOS, ``<out stem>_metrics.json`` (SRCC, PLCC, KRCC, PLCC after
4- and 5-parameter logistic fits, ``n``). That ``out`` can be written is checked before any model
is built or image read, and each file is written whole or not at all (a temporary file in the
same folder renamed over it). Progress (images, rate, ETA) is a bar on a terminal and a log line
at most every 30 s (``IQA_PROGRESS_SECONDS``). With ``run=`` the run's model, prompt and tuned tensors
are rebuilt as ``python -m iqa_lightning.eval`` does; without it ``model``/``score``/``prompt``
presets score zero-shot. Images are decoded and resized as the datasets do (``resize=auto``:
the run's ``dataset.resize``, zero-shot the model's own ``model.resize`` or ``squash``; or ``squash`` / ``short_side_crop`` / ``pad_square``).
``native_size=true`` also gives the scorer each image at its own size (``images``, beside the
square) for a Qwen2-VL family model at its native resolution; ``method=q_insight`` and
``method=visualquality_r1`` set it, ``auto`` (default) takes the run's ``dataset.native_size``
with ``run=`` and is false otherwise.
``trainer=`` takes the training presets (``ddp``, ``ddp_sim``, ``gpu``);
under DDP each process scores its own share and only rank 0 writes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from iqa_lightning import hydra_entry
from iqa_lightning.build import CONFIG_DIR
from iqa_lightning.cli import error_line, report_user_errors
from iqa_lightning.errors import ConfigError
from iqa_lightning.files import atomic_write
from iqa_lightning.image_lists import ImageList, read_images
from iqa_lightning.quantization import with_quantization
from iqa_lightning.video_lists import read_videos, score_videos

log = logging.getLogger("iqa_lightning.score")

RUN_GROUPS = ("model", "score", "prompt")
QUANTIZATION = "model.quantization"
IMAGES_REQUIRED = (
    "images=<folder | image file | CSV/JSON list> (or videos=<folder | video file | list>) is "
    "required: what to score"
)


def _output_files(out: Path) -> list[Path]:
    return [out, _sibling(out, "_skipped.csv"), _sibling(out, "_metrics.json")]


def check_output(out: Path, given: Any = None) -> None:
    """Fail now, naming the path, when ``out`` (and its siblings) cannot be written: before any
    model is built or image scored.

    Raises:
        ConfigError: Not a .csv name, a target that is a folder, a parent that is a file, or a
            folder where no file can be created.
    """
    given = out if given is None else given
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"out={given}: give a .csv file for the scores")
    for path in _output_files(out):
        if path.is_dir():
            raise ConfigError(f"out={given}: {path} is a folder; give a file name")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():
            raise ConfigError(f"out={given}: {folder} is a dangling symlink")
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"out={given}: {folder} is not a folder, so {out} cannot be written")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-check-", suffix=".tmp", dir=folder)
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"out={given}: cannot write in {folder} ({reason})") from None
    os.close(handle)
    os.unlink(probe)


def _csv_bytes(header: list[str], rows) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def write_outputs(out: Path, result, images: ImageList) -> dict[str, Any]:
    """Write the scores, the skipped images and (with MOS) the metrics; return the metrics."""
    from iqa_lightning.eval import correlations

    header = ["image", "score", "mos"] if result.mos is not None else ["image", "score"]
    extras = result.extras  # the scorer's per-image extras (a generated answer, ...)
    header += list(extras)
    rows = [
        [name, score]
        + ([result.mos[i]] if result.mos is not None else [])
        + [values[i] for values in extras.values()]
        for i, (name, score) in enumerate(zip(result.images, result.scores.tolist(), strict=True))
    ]
    scores = _csv_bytes(header, rows)
    atomic_write(out, lambda f: f.write(scores))
    skipped = _csv_bytes(["image", "reason"], result.skipped)
    atomic_write(_sibling(out, "_skipped.csv"), lambda f: f.write(skipped))
    metrics_file = _sibling(out, "_metrics.json")
    if result.mos is None:
        metrics_file.unlink(missing_ok=True)  # not from this list
        return {}
    metrics = {k: _finite(v) for k, v in correlations(result.scores.tolist(), result.mos).items()}
    metrics["mos_key"] = images.mos_key
    text = (json.dumps(metrics, indent=2) + "\n").encode("utf-8")
    atomic_write(metrics_file, lambda f: f.write(text))
    return metrics


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def _task_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def run_clashes(overrides: list[str]) -> list[str]:
    """The overrides that choose or change ``model``, ``score`` or ``prompt`` (which ``run=``
    takes from the run itself); ``model.quantization`` applies to the run's model."""
    keys = [(o, o.lstrip("+~").split("=", 1)[0]) for o in overrides]
    return [o for o, key in keys if key.split(".", 1)[0] in RUN_GROUPS and key != QUANTIZATION]


def build_scorer(cfg: DictConfig):
    """The :class:`~iqa_lightning.scorer.Scorer` of a scoring config: the run's model with
    ``run=``, else the zero-shot ``model``/``score``/``prompt``; its Trainer from ``trainer``."""
    from iqa_lightning.build import build_trainer
    from iqa_lightning.config_checks import check_native_size
    from iqa_lightning.runs import load_run_config, rebuild_run
    from iqa_lightning.scorer import RowCollector, Scorer, run_native_size, zero_shot_module

    resize = cfg.get("resize") or "auto"
    native_size = cfg.get("native_size", "auto")
    if native_size not in (True, False, "auto"):
        raise ConfigError(f"native_size={native_size!r} must be true, false or auto")

    if cfg.get("scorer") is not None:  # a published scorer of the scorer group
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        from iqa_lightning.hub import preset_choice

        # The option's name; outside a Hydra app, the module of its target.
        name = preset_choice("scorer") or str(cfg.scorer.get("_target_", "")).split(".")[-2:][0]
        if cfg.get("run"):
            raise ConfigError("scorer= scores with its own folder (scorer.pretrained); drop run=")
        if OmegaConf.select(cfg, QUANTIZATION):
            raise ConfigError(f"{QUANTIZATION} quantises an LMM backbone; scorer={name} has none")
        if OmegaConf.is_missing(cfg.scorer, "pretrained"):
            raise ConfigError(f"scorer={name} needs scorer.pretrained=<its folder>")
        try:
            module = instantiate(cfg.scorer)
        except InstantiationException as err:  # the loader's own one-line error
            raise (err.__cause__ or err) from None
        image_size = int(module.image_size)
        if resize == "auto":  # the scorer's own pre-processing
            resize = getattr(module, "resize", "squash")
    elif cfg.get("run"):
        clash = run_clashes(_task_overrides())
        if clash:
            raise ConfigError(
                f"run= rebuilds the run's own model, prompt and score head; drop {clash}, or "
                "leave out run= to score zero-shot"
            )
        run_cfg = load_run_config(cfg.run)
        if native_size == "auto":  # as the run's dataset gave its images
            native_size = run_native_size(run_cfg)
        check_native_size(native_size, run_cfg.get("prompt"), "native_size")
        quantized = with_quantization(run_cfg, OmegaConf.select(cfg, QUANTIZATION), cfg.run)
        module, image_size = rebuild_run(cfg.run, quantized), int(run_cfg.model.image_size)
        if resize == "auto":
            resize = OmegaConf.select(run_cfg, "dataset.resize", default="squash")
    else:
        check_native_size(native_size, cfg.get("prompt"), "native_size")
        module, image_size = zero_shot_module(cfg), int(cfg.model.image_size)
        if resize == "auto":  # the model's own pre-processing where it declares one
            resize = OmegaConf.select(cfg, "model.resize", default="squash")
    resize = "squash" if resize == "auto" else resize
    native_size = native_size is True  # auto: the square only (zero-shot, scorer=)
    with open_dict(cfg):  # the row collector draws the progress, counted in images
        cfg.trainer.enable_progress_bar = False
    trainer = build_trainer(cfg, callbacks=[RowCollector(progress="scoring")], loggers=[])
    return Scorer(module, image_size, cfg.batch_size, cfg.num_workers, resize, trainer=trainer,
                  native_size=native_size)  # fmt: skip


def score(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.images`` and write ``cfg.out`` and its siblings (rank 0 only).

    Returns:
        The metrics (empty without MOS).
    """
    videos = cfg.get("videos")
    no_images = OmegaConf.is_missing(cfg, "images") or not str(cfg.images or "").strip()
    if no_images and not videos:
        raise ConfigError(IMAGES_REQUIRED)
    if videos and not no_images:
        raise ConfigError("give images= or videos=, not both")
    out = Path(str(cfg.out)).expanduser()
    check_output(out, cfg.out)  # before any image is read or model built
    read = read_videos if videos else read_images
    images = read(videos or cfg.images, cfg.get("image_root"), cfg.image_key, cfg.mos_key)
    scorer = build_scorer(cfg)
    if videos:  # each video's 1 fps frames in one prompt (iqa_lightning.video_lists)
        result = score_videos(scorer, images)
    else:
        result = scorer.score(images.paths, names=images.names, mos=images.mos)
    if not scorer.trainer.is_global_zero:
        return {}
    if images.skipped:  # folder entries that are no readable file, in folder order
        order = {name: i for i, name in enumerate(sorted([*images.names, *dict(images.skipped)],
                                                          key=PurePosixPath))}  # fmt: skip
        result.skipped = sorted([*images.skipped, *result.skipped], key=lambda s: order[s[0]])
    metrics = write_outputs(out, result, images)
    total = len(images.paths) + len(images.skipped)
    print(f"\nscored {len(result.images)} of {total} images -> {out}", flush=True)
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable image(s), listed in "
              f"{_sibling(out, '_skipped.csv')}:", flush=True)  # fmt: skip
        for name, reason in result.skipped[:20]:
            print(f"  {name}: {reason}", flush=True)
        if len(result.skipped) > 20:
            print(f"  ... and {len(result.skipped) - 20} more", flush=True)
    if not result.images:
        given = f"videos={videos}" if videos else f"images={cfg.images}"
        what = "videos" if videos else "images"
        raise ConfigError(f"{given}: none of the {total} {what} could be read")
    if metrics:
        srcc, plcc = (_figure(metrics[k]) for k in ("srcc", "plcc"))
        print(f"SRCC {srcc}  PLCC {plcc}  (n={metrics['n']}, MOS column {images.mos_key!r}) -> "
              f"{_sibling(out, '_metrics.json')}", flush=True)  # fmt: skip
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="scoring")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    from iqa_lightning.quiet import quiet

    quiet()  # each Lightning line once, no tips or known library noise, the figures last
    score(cfg)


def main() -> None:
    """Entry point of ``python -m iqa_lightning.score``; says at once when ``images=`` is missing
    (before Hydra and the model load)."""
    args = sys.argv[1:]
    flags = any(a.startswith("-") and a not in ("-m", "--multirun") for a in args)
    if not flags and not any(a.split("=", 1)[0].lstrip("+") in ("images", "videos") for a in args):
        print(error_line(ConfigError(IMAGES_REQUIRED)), file=sys.stderr, flush=True)
        raise SystemExit(1)
    with hydra_entry.reported():
        _hydra_main()


if __name__ == "__main__":
    main()
