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
``trainer=`` takes the training presets (``ddp``, ``ddp_sim``, ``gpu``);
under DDP each process scores its own share and only rank 0 writes.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from iqa_lightning.cli import ConfigError, error_line, report_user_errors
from iqa_lightning.data.datasets.table import IMAGE_KEYS as TABLE_IMAGE_KEYS
from iqa_lightning.data.datasets.table import SCORE_KEYS as TABLE_SCORE_KEYS
from iqa_lightning.files import atomic_write
from iqa_lightning.train import CONFIG_DIR

log = logging.getLogger("iqa_lightning.score")

LIST_SUFFIXES = (".csv", ".json", ".txt")
# The keys dataset=table detects (Q-Align / DeQA-Score lists, label CSVs), then plain path names.
IMAGE_KEYS = (*TABLE_IMAGE_KEYS, "image_path", "path", "file", "file_name", "image_id")
MOS_KEYS = TABLE_SCORE_KEYS
RUN_GROUPS = ("model", "score", "prompt")
IMAGES_REQUIRED = "images=<folder | image file | CSV/JSON list> is required: the images to score"


def image_suffixes() -> set[str]:
    """File extensions PIL can open (``.jpg``, ``.png``, ``.bmp``, ``.tif``, ...)."""
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


@dataclass
class ImageList:
    """What ``images=`` names: paths to read, their names in the output, and MOS if any.

    ``skipped`` holds ``(name, reason)`` of a folder's entries with an image extension that are
    no readable file (a dangling symlink, a FIFO, an entry that cannot be read), in folder
    order; they are reported with the images that cannot be decoded.
    """

    paths: list[Path]
    names: list[str]
    mos: list[float] | None = None
    mos_key: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _find_key(keys: list[str], wanted: str, candidates: tuple[str, ...], what: str, where: str):
    """The key of ``keys`` that is ``wanted``, or with ``wanted="auto"`` the first candidate
    present (any case); None when auto finds none."""
    if wanted != "auto":
        if wanted not in keys:
            raise ConfigError(f"{where}: no {what} {wanted!r}; it has {keys}")
        return wanted
    lower = {k.lower(): k for k in keys}
    return next((lower[c] for c in candidates if c in lower), None)


def _mos_wanted(mos_key: str | None) -> str | None:
    return None if mos_key is None or str(mos_key).lower() in ("none", "null", "") else mos_key


def read_csv_list(path: Path, image_key: str, mos_key: str | None) -> tuple[list, list, str]:
    """(image entries, MOS values or None, MOS column) of a CSV list with a header."""
    from iqa_lightning.data import read_annotation_csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        header = [cell.strip() for cell in next(csv.reader(f), [])]
    if not header:
        raise ConfigError(f"images={path}: the CSV list is empty; it needs a header row")
    column = _find_key(header, image_key, IMAGE_KEYS, "image column", f"images={path}")
    if column is None:
        raise ConfigError(
            f"images={path}: no image column among {header}; name it with image_key=<column> "
            f"(looked for {list(IMAGE_KEYS)})"
        )
    wanted = _mos_wanted(mos_key)
    mos_col = wanted and _find_key(header, wanted, MOS_KEYS, "MOS column", f"images={path}")
    numeric = [mos_col] if mos_col else []
    _, rows = read_annotation_csv(path, required=[column], numeric=numeric, unique=column)
    mos = [row.numbers[mos_col] for row in rows] if mos_col else None
    return [row[column] for row in rows], mos, mos_col


def read_json_list(path: Path, image_key: str, mos_key: str | None) -> tuple[list, list, str]:
    """(image entries, MOS values or None, MOS key) of a JSON list of paths or of objects."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"images={path}: not valid JSON ({err})") from err
    if not isinstance(items, list) or not items:
        raise ConfigError(f"images={path}: expected a non-empty JSON list of paths or objects")
    if all(isinstance(item, str) for item in items):
        return items, None, None
    if not all(isinstance(item, dict) for item in items):
        bad = next(i for i, x in enumerate(items) if not isinstance(x, dict))
        raise ConfigError(f"images={path}, item {bad}: expected an object like the first item")
    keys = list(items[0])
    where = f"images={path}, item 0"
    key = _find_key(keys, image_key, IMAGE_KEYS, "image key", where)
    if key is None:
        raise ConfigError(f"{where}: no image key among {keys}; name it with image_key=<key>")
    wanted = _mos_wanted(mos_key)
    mos_k = wanted and _find_key(keys, wanted, MOS_KEYS, "MOS key", where)
    entries, mos = [], []
    for i, item in enumerate(items):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise ConfigError(f"images={path}, item {i}: no {key!r} path")
        entries.append(item[key])
        if mos_k:
            mos.append(_json_number(item.get(mos_k), f"images={path}, item {i}: {mos_k}"))
    return entries, (mos if mos_k else None), mos_k


def _json_number(value: Any, where: str) -> float:
    """A finite score from a JSON number or numeric text (Q-Align writes both)."""
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number):
        raise ConfigError(f"{where}={value!r} is not a number")
    return number


def read_images(spec: Any, image_root: Any = None, image_key: str = "auto",
                mos_key: str | None = "auto") -> ImageList:  # fmt: skip
    """The images ``images=`` names (see the module docstring).

    Raises:
        FileNotFoundError: ``spec`` does not exist.
        ConfigError: An empty folder, an unknown file type, or a list without an image column;
            list errors name the file and the line or item.
    """
    path = Path(str(spec)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"images={spec}: no such file or folder")
    suffixes = image_suffixes()
    if path.is_dir():
        files, skipped = list_folder(path, suffixes)
        if not files and skipped:
            shown = "; ".join(f"{name} ({why})" for name, why in skipped[:5])
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            raise ConfigError(
                f"images={spec}: none of the {len(skipped)} image entries can be read: "
                f"{shown}{more}"
            )
        if not files:
            raise ConfigError(f"images={spec}: no image files in the folder or below it")
        return ImageList(files, [p.relative_to(path).as_posix() for p in files], skipped=skipped)
    suffix = path.suffix.lower()
    if suffix not in LIST_SUFFIXES:
        if suffix not in suffixes:
            raise ConfigError(
                f"images={spec}: not a folder, an image file or a list ({', '.join(LIST_SUFFIXES)})"
            )
        return ImageList([path], [str(spec)])
    if suffix == ".csv":
        entries, mos, key = read_csv_list(path, image_key, mos_key)
    elif suffix == ".json":
        entries, mos, key = read_json_list(path, image_key, mos_key)
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        entries, mos, key = (
            [x.strip() for x in lines if x.strip() and not x.startswith("#")],
            None,
            None,
        )
        if not entries:
            raise ConfigError(f"images={spec}: the list has no paths")
    root = Path(str(image_root)).expanduser() if image_root else path.parent
    paths = [
        Path(e).expanduser() if Path(e).expanduser().is_absolute() else root / e for e in entries
    ]
    return ImageList(paths, [str(e) for e in entries], mos, key)


def list_folder(folder: Path, suffixes: set[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files in ``folder`` and below it (symlinked folders are not entered), sorted,
    and ``(name, reason)`` of each entry with an image extension that is no readable file, and
    of each sub-folder that cannot be listed (names relative to ``folder``)."""
    files, skipped = [], []
    unlisted: list[OSError] = []
    for root, _, names in os.walk(folder, onerror=unlisted.append):
        for name in names:
            entry = Path(root) / name
            if entry.suffix.lower() not in suffixes:
                continue
            problem = entry_problem(entry)
            if problem is None:
                files.append(entry)
            elif problem:
                skipped.append((entry, problem))
    for err in unlisted:
        if err.filename and Path(err.filename) != folder:
            why = f"a folder that cannot be listed ({err.strerror or err})"
            skipped.append((Path(err.filename), why))
    skipped.sort(key=lambda item: item[0])
    return sorted(files), [(p.relative_to(folder).as_posix(), why) for p, why in skipped]


def entry_problem(entry: Path) -> str | None:
    """Why a folder entry is no image file to read (None: a regular file, following symlinks;
    ``""``: a folder, not listed as a problem)."""
    try:
        info = entry.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop"
        if entry.is_symlink() and isinstance(err, FileNotFoundError):
            try:
                return f"dangling symlink to {os.readlink(entry)}"
            except OSError:
                return "dangling symlink"
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISDIR(info.st_mode):
        return ""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return None


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
    rows = [
        [name, score] + ([result.mos[i]] if result.mos is not None else [])
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
    takes from the run itself)."""
    keys = [(o, o.lstrip("+~").split("=", 1)[0].split(".", 1)[0]) for o in overrides]
    return [o for o, key in keys if key in RUN_GROUPS]


def build_scorer(cfg: DictConfig):
    """The :class:`~iqa_lightning.scorer.Scorer` of a scoring config: the run's model with
    ``run=``, else the zero-shot ``model``/``score``/``prompt``; its Trainer from ``trainer``."""
    from iqa_lightning.runs import load_run_config, rebuild_run
    from iqa_lightning.scorer import RowCollector, Scorer, zero_shot_module
    from iqa_lightning.train import build_trainer

    resize = cfg.get("resize") or "auto"

    if cfg.get("scorer") is not None:  # RALI's LLM-free scorer (scorer=rali)
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        from iqa_lightning.scorer import rali_module

        if cfg.get("run"):
            raise ConfigError("scorer= scores with its own folder (scorer.pretrained); drop run=")
        if OmegaConf.is_missing(cfg.scorer, "pretrained"):
            raise ConfigError("scorer=rali needs scorer.pretrained=<scorer folder or RALI release>")
        try:
            rali = instantiate(cfg.scorer)
        except InstantiationException as err:  # the loader's own one-line error
            raise (err.__cause__ or err) from None
        module, image_size = rali_module(rali), rali.image_size
        resize = "short_side_crop" if resize == "auto" else resize  # as CLIP's processor
    elif cfg.get("run"):
        clash = run_clashes(_task_overrides())
        if clash:
            raise ConfigError(
                f"run= rebuilds the run's own model, prompt and score head; drop {clash}, or "
                "leave out run= to score zero-shot"
            )
        run_cfg = load_run_config(cfg.run)
        module, image_size = rebuild_run(cfg.run, run_cfg), int(run_cfg.model.image_size)
        if resize == "auto":
            resize = OmegaConf.select(run_cfg, "dataset.resize", default="squash")
    else:
        module, image_size = zero_shot_module(cfg), int(cfg.model.image_size)
        if resize == "auto":  # the model's own pre-processing where it declares one
            resize = OmegaConf.select(cfg, "model.resize", default="squash")
    resize = "squash" if resize == "auto" else resize
    with open_dict(cfg):  # the row collector draws the progress, counted in images
        cfg.trainer.enable_progress_bar = False
    trainer = build_trainer(cfg, callbacks=[RowCollector(progress="scoring")], loggers=[])
    return Scorer(module, image_size, cfg.batch_size, cfg.num_workers, resize, trainer=trainer)


def score(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.images`` and write ``cfg.out`` and its siblings (rank 0 only).

    Returns:
        The metrics (empty without MOS).
    """
    if OmegaConf.is_missing(cfg, "images") or not str(cfg.images).strip():
        raise ConfigError(IMAGES_REQUIRED)
    out = Path(str(cfg.out)).expanduser()
    check_output(out, cfg.out)  # before any image is read or model built
    images = read_images(cfg.images, cfg.get("image_root"), cfg.image_key, cfg.mos_key)
    scorer = build_scorer(cfg)
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
        raise ConfigError(f"images={cfg.images}: none of the {total} images could be read")
    if metrics:
        srcc, plcc = (_figure(metrics[k]) for k in ("srcc", "plcc"))
        print(f"SRCC {srcc}  PLCC {plcc}  (n={metrics['n']}, MOS column {images.mos_key!r}) -> "
              f"{_sibling(out, '_metrics.json')}", flush=True)  # fmt: skip
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="scoring")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    import warnings

    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    import lightning.pytorch  # noqa: F401  (its import adds the handlers cleared here)

    # Lightning prints through its own handlers as well; Hydra's logging alone shows its lines.
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).handlers.clear()
    score(cfg)


def main() -> None:
    """Entry point of ``python -m iqa_lightning.score``; says at once when ``images=`` is missing
    (before Hydra and the model load)."""
    args = sys.argv[1:]
    flags = any(a.startswith("-") and a not in ("-m", "--multirun") for a in args)
    if not flags and not any(a.split("=", 1)[0].lstrip("+") == "images" for a in args):
        print(error_line(ConfigError(IMAGES_REQUIRED)), file=sys.stderr, flush=True)
        raise SystemExit(1)
    _hydra_main()


if __name__ == "__main__":
    main()
