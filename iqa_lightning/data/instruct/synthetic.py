"""Instruction and multiple-choice data generated from a synthetic KADID-style set.

From the images and scores written by :func:`~iqa_lightning.data.datasets.synthetic.generate_synthetic_kadid`
(``images/I01_03_02.png`` = reference 1, distortion type 3, level 2; ``dmos.csv``) this writes
templated data in the two real formats, so the instruction-tuning path runs offline:

- ``q_instruct.json`` (Q-Instruct / LLaVA conversations): per distorted image, a two-turn
  perception dialogue (what distortion, how strong) and an overall quality explanation ending in
  "the quality of the image is <excellent|good|fair|poor|bad>" (from the MOS, five equal bins of
  the 1-5 scale); per reference, side-by-side composites of two blur levels (or the pristine
  reference) asking which half is sharper (the PNGs are written to ``composites/``).
- ``qbench_{train,val,test}.json`` (Q-Bench multiple choice): per distorted image a yes-or-no,
  a what and two how questions (2-4 candidates; concern distortion or other), plus one which-half
  question per composite.
- ``descriptions.json`` (Q-Instruct format): per distorted image, one conversation answering
  :data:`~.descriptions.PERCEPTION_QUESTION` with the description of its basic visual features
  built from its true distortion and level (:func:`~.descriptions.synthetic_description`; the
  perception stage's training text).

References are split into train / val / test (seeded, or as given, e.g. the score data module's
reference-disjoint split); conversations are written for train references only, so no
reference content is shared between training conversations and validation / test questions.
Image paths are relative to the output folder (``../<kadid folder>/images/...`` when the KADID
set is a sibling), which is the ``image_root`` to read them with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from iqa_lightning.errors import AnnotationError

from ..datasets.synthetic import (
    DISTORTIONS,
    SyntheticDataModule,
    generate_synthetic_kadid,
    pop_generation,
    synthetic_dirname,
)
from ..generated import GeneratedSet
from ..images import load_rgb
from ..records import read_annotation_csv
from .descriptions import PERCEPTION_QUESTION, describe_features, reference_content
from .mixture import QBENCH_SPLIT_FILES, InstructDataModule
from .templates import (
    PAIR_QUESTION,
    blur_pairs,
    conversation_record,
    image_conversations,
    image_questions,
    mcq_record,
    strength_word,
)

__all__ = [
    "DESCRIPTIONS_FILE",
    "QBENCH_FILES",
    "QINSTRUCT_FILE",
    "SyntheticInstructDataModule",
    "generate_synthetic_instruct",
    "instruct_dirname",
]

logger = logging.getLogger("iqa_lightning.data")

GENERATOR_VERSION = 2
MARKER = "synthetic_instruct.json"
QINSTRUCT_FILE = "q_instruct.json"
DESCRIPTIONS_FILE = "descriptions.json"
QBENCH_FILES = QBENCH_SPLIT_FILES
COMPOSITE_DIR = "composites"
_NAME = re.compile(r"I(\d+)_(\d+)_(\d+)\.png")
_SET = GeneratedSet("synthetic instruction set", MARKER, QINSTRUCT_FILE)


def instruct_dirname(kadid_root: str | os.PathLike, seed: int = 0, splits=None) -> str:
    """Folder name ``<kadid folder>_instruct_<hash of version, seed and splits>``."""
    key = {"seed": int(seed), "splits": _sorted(splits), "version": GENERATOR_VERSION}
    key = json.dumps(key, sort_keys=True)
    return f"{Path(kadid_root).name}_instruct_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def generate_synthetic_instruct(
    kadid_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    splits: Mapping[str, str] | None = None,
) -> Path:
    """Write Q-Instruct and Q-Bench style files for a KADID-layout synthetic set.

    Writing goes to a temporary sibling folder renamed into place (see
    :func:`~iqa_lightning.data.datasets.synthetic.generate_synthetic_kadid`); an ``out_dir`` that already
    holds the same generation is returned untouched.

    Args:
        kadid_root: Folder with ``dmos.csv`` and ``images/`` (distortion types numbered as in
            :data:`~iqa_lightning.data.datasets.synthetic.DISTORTIONS`).
        out_dir: Folder to create.
        seed: Seed of the templates, candidates, composites and (without ``splits``) the
            reference split.
        splits: Optional reference file name (``ref_img``, e.g. ``"I01.png"``) to ``"train"``,
            ``"val"`` or ``"test"``; every reference must be listed and every split used.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        FileNotFoundError: ``kadid_root`` lacks ``dmos.csv`` or an image.
        AnnotationError: An image name does not follow the KADID pattern or has an unknown type.
        ValueError: Fewer than 3 references, or a bad ``splits`` mapping.
        FileExistsError: ``out_dir`` exists with other content.
    """
    kadid_root, out_dir = Path(kadid_root), Path(out_dir)
    images = _read_kadid(kadid_root)
    references = sorted({image["ref"] for image in images})
    assignment = _assign(references, seed, splits)
    params = {
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "splits": _sorted(splits),
        "dmos_sha1": hashlib.sha1((kadid_root / "dmos.csv").read_bytes()).hexdigest(),
    }

    def fill(tmp: Path) -> None:
        _write(tmp, out_dir, kadid_root, images, assignment, int(seed))

    return _SET.write(out_dir, params, fill)


def _read_kadid(root: Path) -> list[dict]:
    labels = root / "dmos.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"'{root}' is not a KADID-layout set: {labels} does not exist")
    _, rows = read_annotation_csv(
        labels, required=("dist_img", "ref_img", "dmos"), numeric=("dmos",), unique="dist_img"
    )
    images = []
    for row in rows:
        match = _NAME.fullmatch(row["dist_img"])
        if match is None:
            raise AnnotationError(
                f"{labels}, line {row.line}: image name {row['dist_img']!r} does not follow "
                "I<ref>_<type>_<level>.png"
            )
        kind, level = int(match[2]), int(match[3])
        if not 1 <= kind <= len(DISTORTIONS):
            raise AnnotationError(
                f"{labels}, line {row.line}: distortion type {kind} of {row['dist_img']!r} is "
                f"not one of the {len(DISTORTIONS)} synthetic types"
            )
        images.append(
            {
                "file": row["dist_img"],
                "ref": row["ref_img"],
                "kind": DISTORTIONS[kind - 1][0],
                "level": level,
                "mos": row.numbers["dmos"],
                "content": reference_content(int(match[1])),
            }
        )
    levels = max(image["level"] for image in images)
    for image in images:
        image["strength"] = strength_word(image["level"], levels)
    return images


def _assign(references: list[str], seed: int, splits) -> dict[str, str]:
    if len(references) < 3:
        raise ValueError(
            f"need at least 3 references for train / val / test, the set has {len(references)}"
        )
    if splits is not None:
        assignment = {str(k): str(v) for k, v in splits.items()}
        missing = [r for r in references if r not in assignment]
        bad = {k: v for k, v in assignment.items() if v not in QBENCH_FILES}
        if missing or bad:
            raise ValueError(
                f"splits must give every reference one of {list(QBENCH_FILES)}; missing "
                f"{missing[:5]}, bad {dict(list(bad.items())[:5])}"
            )
        empty = [name for name in QBENCH_FILES if name not in assignment.values()]
        if empty:
            raise ValueError(f"splits leave no reference for {empty}")
        return {r: assignment[r] for r in references}
    order = list(references)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(0.2 * len(order)))
    n_val = max(1, round(0.1 * len(order)))
    names = ["test"] * n_test + ["val"] * n_val
    names += ["train"] * (len(order) - len(names))
    return dict(zip(order, names, strict=True))


def _write(tmp, out_dir, kadid_root, images, assignment, seed) -> None:
    image_dir = kadid_root / "images"

    def rel(path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()

    conversations: list[dict] = []
    descriptions: list[dict] = []
    questions: dict[str, list[dict]] = {name: [] for name in QBENCH_FILES}
    for image in images:
        split = assignment[image["ref"]]
        rng = random.Random(f"{seed}/{image['file']}")
        path = rel(image_dir / image["file"])
        stem = image["file"][: -len(".png")]
        if split == "train":
            conversations += image_conversations(stem, path, image, rng)
            text = describe_features(image["content"], image["kind"], image["strength"])
            descriptions.append(
                conversation_record(f"{stem}-description", path, [(PERCEPTION_QUESTION, text)])
            )
        questions[split] += image_questions(stem, path, image, rng)
    (tmp / COMPOSITE_DIR).mkdir()
    for pair in blur_pairs(images, image_dir, seed):
        ref_stem = pair["ref"][: -len(".png")]
        name = f"{ref_stem}_pair{pair['index']}.png"
        left, right = (load_rgb(p) for p in pair["paths"])
        composite = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
        composite.paste(left, (0, 0))
        composite.paste(right, (left.width, 0))
        composite.save(tmp / COMPOSITE_DIR / name, compress_level=1)
        path = f"{COMPOSITE_DIR}/{name}"
        record_id = f"{ref_stem}-pair{pair['index']}"
        split = assignment[pair["ref"]]
        if split == "train":
            conversations.append(
                conversation_record(record_id, path, [(PAIR_QUESTION, pair["answer"])])
            )
        side = pair["sharper"]
        candidates = ["Left", "Right"]
        questions[split].append(
            mcq_record(
                record_id, path, PAIR_QUESTION, candidates, side.capitalize(), "what", "distortion"
            )
        )
    _dump(tmp / QINSTRUCT_FILE, conversations)
    _dump(tmp / DESCRIPTIONS_FILE, descriptions)
    for name, file in QBENCH_FILES.items():
        _dump(tmp / file, questions[name])


def _dump(path: Path, records: list[dict]) -> None:
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _sorted(splits) -> dict | None:
    return None if splits is None else {str(k): str(splits[k]) for k in sorted(splits)}


class SyntheticInstructDataModule(InstructDataModule):
    """Instruction data generated offline from a synthetic KADID-style set.

    :meth:`prepare_data` (or :meth:`setup`, when still absent) generates the KADID-style set
    under ``cache_dir/synthetic_kadid_<hash>`` (or uses the set of ``synthetic_datamodule``, or
    of a :class:`~iqa_lightning.data.datasets.synthetic.SyntheticDataModule` passed as
    ``score_datamodule``), then the instruction set next to it in
    ``<kadid folder>_instruct_<hash>``. When the score data module reads that same set with each
    reference in one split (``reference_disjoint``), the questions and conversations follow its
    reference split, so no reference crosses splits between the two tasks.

    Args:
        cache_dir: Folder for generated data (config key ``paths.cache_dir``).
        n_refs: Number of reference photographs (1-12; at least 3 for the splits).
        generated_size: Side of the generated images.
        levels: Severity levels per distortion type.
        generator_seed: Seed of the instruction generator, and of the KADID-style generator when
            this module generates the set (independent of the training ``seed``).
        synthetic_datamodule: Use this data module's generated set instead.
        align_splits: Follow the score data module's reference split when it reads the set.
        name: Name for logs.
        **kwargs: Other :class:`~iqa_lightning.data.instruct.mixture.InstructDataModule` arguments
            (image_size, batch_size, score_datamodule, mixture, steps_per_epoch, seed, ...).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike = ".cache",
        synthetic_datamodule: SyntheticDataModule | None = None,
        align_splits: bool = True,
        name: str = "synthetic_instruct",
        **kwargs,
    ):
        own = pop_generation(kwargs)
        super().__init__(name=name, **kwargs)
        source = synthetic_datamodule
        if source is None and isinstance(self.score_datamodule, SyntheticDataModule):
            source = self.score_datamodule
        if source is not None:
            self.generation = dict(source.generation)
            self.kadid_root = Path(source.root)
        else:
            self.generation = own
            cache = Path(os.path.expanduser(str(cache_dir)))
            self.kadid_root = cache / synthetic_dirname(**self.generation)
        self.generator_seed = own["seed"]
        self.align_splits = bool(align_splits)
        self._splits: dict | None = None
        self._splits_known = False

    @property
    def instruct_root(self) -> Path:
        """Folder of the generated instruction set (needs the reference split)."""
        name = instruct_dirname(self.kadid_root, self.generator_seed, self.reference_splits())
        return self.kadid_root.parent / name

    def reference_splits(self) -> dict[str, str] | None:
        """``ref_img`` to split of the score data module when it reads this set with each
        reference in one split; else None (the generator's own seeded split)."""
        score = self.score_datamodule
        if self._splits_known:
            return self._splits
        if not self.align_splits or score is None or score.root is None:
            return None
        if Path(score.root).resolve() != self.kadid_root.resolve():
            return None
        generate_synthetic_kadid(self.kadid_root, **self.generation)
        score.setup("fit")
        table = dict(score.split_table())
        splits: dict[str, set] = {}
        for record in score.records():
            splits.setdefault(str(record.ref_id), set()).add(table[record.image_id])
        if any(len(names) > 1 for names in splits.values()):
            logger.warning(
                "%s: the score data module puts one reference in several splits (split=%s); "
                "the instruction set uses its own reference-disjoint split",
                self.name,
                score.split,
            )
            self._splits = None
        else:
            self._splits = {ref: names.pop() for ref, names in splits.items()}
        self._splits_known = True
        return self._splits

    def prepare_data(self) -> None:
        """Generate the KADID-style set and the instruction set if they are not cached."""
        super().prepare_data()
        generate_synthetic_kadid(self.kadid_root, **self.generation)
        generate_synthetic_instruct(
            self.kadid_root, self.instruct_root, self.generator_seed, self.reference_splits()
        )

    def setup(self, stage: str | None = None) -> None:
        """Generate the sets when absent, point at their files, then set up as usual."""
        root = self.instruct_root
        if _SET.existing(root) is None:
            self.prepare_data()
        self.qinstruct_json = root / QINSTRUCT_FILE
        self.qbench_dir = self.image_root = root
        super().setup(stage)
