"""The offline IQA set of the learning proof (``dataset=learning``), made without a download.

Images come from the world of :mod:`iqa_lightning.tiny.world`: crops of the photographs
scikit-image and matplotlib ship, with zero to two distortions of known kind and strength each.
Its MOS is the fixed law :func:`~iqa_lightning.tiny.world.quality` (kind-specific weights and
curvatures, several distortions multiplying), plus seeded rater noise of standard deviation
:data:`RATER_NOISE` on the 1-5 scale. The split is written in the file:

- ``train`` and ``val``: the photographs that pre-training also saw, distortion strengths
  from :data:`TRAIN_STRENGTHS`;
- ``test``: the held-out photographs (:data:`~iqa_lightning.tiny.world.HELD_OUT_PHOTOS`,
  never seen in pre-training nor in training) at held-out strengths (:data:`TEST_STRENGTHS`).

The folder holds ``labels.csv`` (``image,mos,std,split,photo,distortions``; read by the
``table`` loader, its ``split`` column is the official split), ``images/*.png``, and two
Q-Instruct-format files: ``q_instruct.json`` for the training images only (a perception turn and
an overall quality explanation ending in a level word) and ``descriptions.json`` for every image
(the description of basic visual features the perception stage learns to write; read by
``perception.descriptions``, the test images' only with ``inference.description=given``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..generated import GeneratedSet
from ..spec import DatasetSpec
from .table import TableDataModule

__all__ = [
    "RATER_NOISE",
    "TEST_STRENGTHS",
    "TRAIN_STRENGTHS",
    "LearningDataModule",
    "generate_learning_set",
    "learning_dirname",
]

GENERATOR_VERSION = 3  # bump with every change to the set or to iqa_lightning/tiny/world.py
MARKER = "learning_set.json"
LABELS = "labels.csv"
TRAIN_STRENGTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
TEST_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
RATER_NOISE = 0.1
LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")  # Q-Align's, best first
_SET = GeneratedSet("learning set", MARKER, LABELS)


def _params(train: int, val: int, test: int, size: int, seed: int) -> dict:
    for name, value in (("train", train), ("val", val), ("test", test)):
        if int(value) < 4:
            raise ValueError(f"dataset.{name}_images must be at least 4, got {value}")
    if not 16 <= int(size) <= 512:
        raise ValueError(f"dataset.generated_size must be in [16, 512], got {size}")
    return {
        "version": GENERATOR_VERSION,
        "train": int(train),
        "val": int(val),
        "test": int(test),
        "size": int(size),
        "seed": int(seed),
    }


def learning_dirname(train: int, val: int, test: int, size: int, seed: int) -> str:
    """Folder name ``learning_<hash of the generation parameters>``."""
    key = json.dumps(_params(train, val, test, size, seed), sort_keys=True)
    return f"learning_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def generate_learning_set(
    out_dir: str | os.PathLike,
    train: int = 480,
    val: int = 96,
    test: int = 192,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the set to ``out_dir`` (atomically; an identical set there is reused).

    Args:
        out_dir: Folder to create.
        train: Training images.
        val: Validation images.
        test: Test images.
        size: Side of the square images in pixels.
        seed: Seed of crops, distortions and rater noise.
    """
    params = _params(train, val, test, size, seed)
    return _SET.write(Path(out_dir), params, lambda tmp: _write(tmp, params))


def _write(root: Path, params: dict) -> None:
    from iqa_lightning.data.instruct.descriptions import PERCEPTION_QUESTION
    from iqa_lightning.tiny.world import (
        HELD_OUT_PHOTOS,
        SEEN_PHOTOS,
        content,
        distortion_phrase,
        quality,
        random_scene,
        render,
    )

    (root / "images").mkdir(parents=True)
    seen = list(SEEN_PHOTOS)
    plan = [
        ("train", params["train"], seen, TRAIN_STRENGTHS),
        ("val", params["val"], seen, TRAIN_STRENGTHS),
        ("test", params["test"], list(HELD_OUT_PHOTOS), TEST_STRENGTHS),
    ]
    rows, conversations, descriptions = [], [], []
    for s, (split, count, photos, strengths) in enumerate(plan):
        rng = np.random.default_rng([params["seed"], s])
        for i in range(count):
            scene = random_scene(rng, photos, strengths)
            name = f"{split}_{i:04d}.png"
            render(scene, params["size"]).save(root / "images" / name, compress_level=1)
            mos = quality(scene.distortions) + rng.normal(0.0, RATER_NOISE)
            mos = float(np.clip(mos, 1.0, 5.0))
            kinds = ";".join(f"{k}:{t:g}" for k, t in scene.distortions)
            rows.append([f"images/{name}", f"{mos:.4f}", "0.35", split, scene.source, kinds])
            phrase, what = distortion_phrase(scene), content(scene)
            record = {"id": name, "image": f"images/{name}"}
            descriptions.append(
                {
                    **record,
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{PERCEPTION_QUESTION}"},
                        {"from": "gpt", "value": f"It shows {what}, with {phrase}."},
                    ],
                }
            )
            if split != "train":
                continue
            level = LEVEL_WORDS[min(4, int((5.0 - mos) / 0.8))]
            conversations.append(
                {
                    **record,
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhich distortions does the image have?"},
                        {"from": "gpt", "value": f"It has {phrase}."},
                        {"from": "human", "value": "How is the overall quality of the image?"},
                        {"from": "gpt", "value": f"With {phrase}, the quality of the image is {level}."},
                    ],
                }
            )  # fmt: skip
    with (root / LABELS).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mos", "std", "split", "photo", "distortions"])
        writer.writerows(rows)
    (root / "q_instruct.json").write_text(json.dumps(conversations, indent=1) + "\n")
    (root / "descriptions.json").write_text(json.dumps(descriptions, indent=1) + "\n")


class LearningDataModule(TableDataModule):
    """The learning set, generated in ``root`` on first use and read as a table.

    Args:
        root: Folder of the set (``conf/dataset/learning.yaml`` names it after the generation
            settings, under ``paths.cache_dir``); None: ``.cache/<learning_dirname(...)>``.
        train_images: Training images.
        val_images: Validation images.
        test_images: Test images (held-out photographs and strengths).
        generated_size: Side of the generated images.
        generator_seed: Seed of the generation (independent of the run's ``seed``).
        **kwargs: :class:`~iqa_lightning.data.datasets.table.TableDataModule` arguments.
    """

    spec = DatasetSpec(name="learning", title="learning set", split="official")

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train_images: int = 480,
        val_images: int = 96,
        test_images: int = 192,
        generated_size: int = 64,
        generator_seed: int = 0,
        **kwargs,
    ):
        self.generation = {
            "train": int(train_images),
            "val": int(val_images),
            "test": int(test_images),
            "size": int(generated_size),
            "seed": int(generator_seed),
        }
        _params(**self.generation)
        if root is None:
            root = Path(".cache") / learning_dirname(**self.generation)
        folder = Path(os.path.expanduser(str(root)))
        kwargs.setdefault("mos_range", self.spec.mos_range)
        kwargs.setdefault("split", self.spec.split)
        kwargs.setdefault("name", self.spec.name)
        super().__init__(file=folder / LABELS, root=folder, **kwargs)
        self.folder = folder

    def prepare_data(self) -> None:
        """Generate the set if it is not there yet."""
        generate_learning_set(self.folder, **self.generation)

    def check_root(self) -> None:
        """Generate the set when absent, then check it as usual."""
        self.prepare_data()
        super().check_root()
