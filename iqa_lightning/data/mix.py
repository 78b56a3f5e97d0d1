"""Training on several datasets at once (``dataset=mix``): Q-Align's and DeQA-Score's "Mix3"
(KonIQ-10k + SPAQ + KADID-10k) and any other list of dataset options.

Each dataset is composed as its own option would be (``conf/dataset/<name>.yaml``, its
defaults and interpolations, ``dataset.roots.<name>`` as its root, ``dataset.options.<name>``
for its other keys) and read, checked and split by its own data module, as published. The mix
then puts every dataset's scores on one scale, the way DeQA-Score's ``gen_soft_label.py``
(lines 97-98, 119-120) does: each dataset's lowest..highest score over all its images
(``normalize=observed``; ``declared``: its ``mos_range``, direction included) becomes the common
range (``mos_range``, default 1-5). Level losses (``module.loss=level_ce|soft_label``) thus cut
each dataset's own range into 5 levels, and its rating stds are scaled with its scores.

Batches are the single-dataset ones (:mod:`.base`) plus ``dataset`` (list[str]: each image's
dataset name); ``image_id`` is ``<dataset>/<image name>`` (names stay unique across datasets)
and ``mos_raw`` is the score on the common range. Each dataset keeps its own split; the training
split repeats each dataset's images ``weights[name]`` times (DeQA-Score's ``data_weights``:
``pair_dataset.py`` line 33, ``data_list * data_weight``), then shuffles them together.
Validation and test score every dataset; the module reports each one's figures under
``val/<dataset>/srcc`` etc. and their mean as ``val/srcc`` (:class:`~iqa_lightning.metrics.CorrelationMetrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from iqa_lightning.errors import AnnotationError, ConfigError

from .base import IQADataModule
from .dataset import IQAImageDataset, LabelledImage
from .records import ImageRecord
from .spec import DatasetSpec

__all__ = ["NORMALIZE", "MixDataModule", "MixedImageDataset", "compose_dataset", "mix_datasets"]

logger = logging.getLogger("iqa_lightning.data")

#: ``dataset.normalize``: which range of each dataset becomes the common range.
NORMALIZE = ("observed", "declared")
#: The Hydra config folder (``conf/``) holding the ``dataset`` options.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
#: Dataset options a mix cannot hold.
NOT_MIXABLE = ("mix",)


def dataset_options() -> list[str]:
    """The ``dataset`` options a mix can hold (``conf/dataset/*.yaml`` but ``_*`` and ``mix``)."""
    names = (p.stem for p in (CONFIG_DIR / "dataset").glob("[!_]*.yaml"))
    return sorted(n for n in names if n not in NOT_MIXABLE)


def compose_dataset(
    name: str,
    context: Mapping[str, Any],
    root: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> DictConfig:
    """The dataset option ``name`` composed by Hydra as ``dataset=<name>`` would compose it,
    its interpolations resolved against ``context``.

    Args:
        name: A ``dataset`` option (``koniq``, ``spaq``, ...).
        context: What the options interpolate: ``paths`` (``data_dir``, ``cache_dir``),
            ``model`` (``image_size``, ``resize``) and ``seed``.
        root: The dataset's folder (``dataset.root``); None: the option's default.
        options: Other keys of the option to set (``{"split": "random"}``).

    Raises:
        ConfigError: No such option, or a key the option does not have.
    """
    known = dataset_options()
    if name not in known:
        raise ConfigError(f"dataset.datasets: no dataset option {name!r}; options are {known}")
    overrides = [f"+dataset={name}"]
    if GlobalHydra.instance().is_initialized():  # inside a driver: its config folder is ours
        cfg = compose(overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(overrides=overrides)
    node = cfg.dataset
    for key, value in (options or {}).items():
        if key not in node:
            raise ConfigError(
                f"dataset.options.{name}.{key}: the {name} option has no key {key!r}; "
                f"its keys are {sorted(str(k) for k in node.keys())}"
            )
        node[key] = value
    if root is not None:
        node.root = str(root)
    full = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(context), resolve=True))
    full.dataset = OmegaConf.to_container(node)
    OmegaConf.resolve(full)
    return full.dataset


def mix_datasets(
    datasets: Sequence[str],
    context: Mapping[str, Any],
    roots: Mapping[str, str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    shared: Mapping[str, Any] | None = None,
    **kwargs,
) -> MixDataModule:
    """Compose and build every dataset of the mix, then the :class:`MixDataModule` over them
    (``conf/dataset/mix.yaml``'s target).

    Args:
        datasets: Dataset options, in order (``[koniq, spaq, kadid]``).
        context: What the options interpolate (:func:`compose_dataset`).
        roots: ``{option: root folder}``; an option not named keeps its own default root.
        options: ``{option: {key: value}}``: other keys of one dataset.
        shared: Keys set on every dataset (the mix's ``target``, ``on_bad_image``,
            ``check_images``, ``num_workers``: how each one is read and checked).
        **kwargs: :class:`MixDataModule` arguments.

    Raises:
        ConfigError: An empty or repeated list, a root or an options entry for a dataset the
            mix does not hold, or an option's unknown key.
    """
    names = [str(n) for n in datasets or []]
    if not names:
        raise ConfigError("dataset.datasets is empty; name the datasets to mix, e.g. [koniq,spaq]")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"dataset.datasets names {repeated} more than once: {names}")
    roots = {k: v for k, v in (roots or {}).items() if v is not None}
    options = {k: v for k, v in (options or {}).items() if v}
    for key, given in (("roots", roots), ("options", options)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ConfigError(
                f"dataset.{key} names {unknown}, which are not in dataset.datasets {names}"
            )
    members = {}
    for name in names:
        settings = {**(shared or {}), **((options or {}).get(name) or {})}
        node = compose_dataset(name, context, (roots or {}).get(name), settings)
        members[name] = instantiate(node)
    return MixDataModule(members, **kwargs)


class MixedImageDataset(IQAImageDataset):
    """An :class:`~.dataset.IQAImageDataset` whose samples also carry ``dataset`` (the name of
    the dataset each image comes from).

    Args:
        items: Images with their labels.
        sources: The dataset name of each item.
        **kwargs: :class:`~.dataset.IQAImageDataset` arguments.
    """

    def __init__(self, items: Sequence[LabelledImage], sources: Sequence[str], **kwargs) -> None:
        super().__init__(items, **kwargs)
        self.sources = list(sources)
        if len(self.sources) != len(self.items):
            raise ValueError(f"{len(self.items)} items but {len(self.sources)} dataset names")

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        sample["dataset"] = self.sources[index]
        return sample


class MixDataModule(IQADataModule):
    """Several data modules as one: each read, checked and split as itself, scores on one
    common range, the training split repeated per dataset by ``weights``.

    Args:
        datasets: ``{name: data module}`` in order (each set up here, as it would set itself up).
        weights: ``{name: repeat factor}`` of the training split (integers >= 0; a dataset
            not named: 1); DeQA-Score's ``data_weights``.
        normalize: ``observed`` (each dataset's lowest..highest score over all its images
            becomes ``mos_range``: DeQA-Score's, and the level bins of Q-Align's and DeQA-Score's
            data) or ``declared`` (its own ``mos_range``, flipped for DMOS).
        mos_range: The common range of ``mos_raw`` (default 1-5, as Q-Align and DeQA-Score).
        **kwargs: :class:`~.base.IQADataModule` loader arguments (``image_size``,
            ``batch_size``, ``eval_batch_size``, ``num_workers``, ``hflip``, ``seed``,
            ``resize``, ``native_size``, ``cache``, ``cache_dir``, ``target``, ``name``, ...).
    """

    spec = DatasetSpec(name="mix", title="a mix of datasets", mos_range=(1.0, 5.0))

    def __init__(
        self,
        datasets: Mapping[str, IQADataModule],
        weights: Mapping[str, int] | None = None,
        normalize: str = "observed",
        mos_range: Sequence[float] = (1.0, 5.0),
        **kwargs,
    ) -> None:
        for key in ("root", "higher_better", "split"):
            kwargs.pop(key, None)  # each dataset has its own
        super().__init__(root=None, mos_range=mos_range, higher_better=True, **kwargs)
        if not datasets:
            raise ConfigError("dataset.datasets is empty; name the datasets to mix")
        self.members = dict(datasets)
        for name, member in self.members.items():
            if not isinstance(member, IQADataModule):
                raise ConfigError(f"dataset {name!r} of the mix is a {type(member).__name__}, "
                                  "not an image quality data module")  # fmt: skip
        if normalize not in NORMALIZE:
            raise ConfigError(
                f"dataset.normalize must be one of {list(NORMALIZE)}, got {normalize!r}"
            )
        self.normalize = normalize
        self.weights = self._check_weights(weights or {})
        self._sources: dict[str, str] = {}

    def _check_weights(self, weights: Mapping[str, Any]) -> dict[str, int]:
        weights = {k: v for k, v in weights.items() if v is not None}
        unknown = sorted(set(weights) - set(self.members))
        if unknown:
            raise ConfigError(
                f"dataset.weights names {unknown}, which are not in the mix {list(self.members)}"
            )
        out = {}
        for name in self.members:
            value = weights.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"dataset.weights.{name}={value!r}: a repeat factor is an integer >= 0"
                )
            out[name] = value
        if not any(out.values()):
            raise ConfigError(f"dataset.weights {out}: every dataset has weight 0; nothing trains")
        return out

    @property
    def names(self) -> list[str]:
        """The mixed datasets' names, in order."""
        return list(self.members)

    def read_records(self) -> list[ImageRecord]:
        """Set every dataset up (its files, checks and split) and return its records with ids
        ``<dataset>/<image>`` and scores on the common range."""
        records: list[ImageRecord] = []
        self._assignment, self._skipped, self._sources = {}, [], {}
        common_lo, common_hi = self.mos_range
        for name, member in self.members.items():
            member.prepare_data()
            member.setup("fit")
            lo_t, hi_t = member.target_bounds() if self.normalize == "observed" else (0.0, 1.0)
            if hi_t <= lo_t:
                raise AnnotationError(
                    f"{name}: every image has the same score, so dataset.normalize=observed has "
                    "no range to map; use dataset.normalize=declared"
                )
            lo, hi = member.mos_range
            scale = (common_hi - common_lo) / (hi_t - lo_t)
            splits = dict(member.split_table())
            for record in member.records():
                image_id = f"{name}/{record.image_id}"
                target = (member.to_target(record.mos_raw) - lo_t) / (hi_t - lo_t)
                std = None if record.mos_std is None else record.mos_std / (hi - lo) * scale
                records.append(
                    ImageRecord(
                        image_id,
                        record.path,
                        common_lo + target * (common_hi - common_lo),
                        ref_id=None if record.ref_id is None else f"{name}/{record.ref_id}",
                        official_split=splits[record.image_id],
                        mos_std=std,
                        rating_counts=record.rating_counts,
                        level=record.level,
                    )
                )
                self._assignment[image_id] = splits[record.image_id]
                self._sources[image_id] = name
            self._skipped += [(f"{name}/{i}", p, why) for i, p, why in member._skipped]
        with_levels = {self._sources[r.image_id] for r in records if r.level is not None}
        if with_levels and with_levels != set(self.members):
            without = [n for n in self.members if n not in with_levels]
            raise ConfigError(
                f"the mix's {sorted(with_levels)} give level words from their answers "
                f"(dataset.levels_from=answer), {without} do not: a batch needs them from every "
                "dataset or none"
            )
        return records

    def setup(self, stage: str | None = None) -> None:
        """Set every dataset up and join them (idempotent)."""
        if self._records is not None:
            return
        records = self.read_records()
        self._records = records
        counts = self.num_records
        per = ", ".join(
            f"{n} {sum(1 for i in self._sources.values() if i == n)} (x{self.weights[n]} in train)"
            for n in self.members
        )  # fmt: skip
        logger.info(
            "%s: %d images (train %d, val %d, test %d): %s; scores on %s by each dataset's %s range",
            self.name, len(records), counts["train"], counts["val"], counts["test"], per,
            list(self.mos_range), self.normalize,
        )  # fmt: skip

    def assign(self, records: Sequence[ImageRecord]) -> dict[str, str]:
        """Each record's split: the one its own dataset gave it."""
        return {r.image_id: self._assignment[r.image_id] for r in records}

    def source_of(self, image_id: str) -> str:
        """The dataset an image of the mix comes from."""
        self._require_setup()
        return self._sources[image_id]

    def dataset(self, split: str) -> MixedImageDataset:
        """The torch dataset of one split (``"all"``: every image), samples naming their dataset;
        the training split holds each dataset's images ``weights[name]`` times, dataset by
        dataset (the loader shuffles them together)."""
        plain = super().dataset(split)
        by_source: dict[str, list[LabelledImage]] = {name: [] for name in self.members}
        for item in plain.items:
            by_source[self._sources[item.image_id]].append(item)
        items, sources = [], []
        for name, group in by_source.items():
            times = self.weights[name] if split == "train" else 1
            items += group * times
            sources += [name] * (len(group) * times)
        return MixedImageDataset(
            items, sources, image_size=plain.image_size, hflip=plain.hflip, cache=plain.cache,
            resize=plain.resize, native_size=plain.native_size,
        )  # fmt: skip
