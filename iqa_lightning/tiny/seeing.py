"""How well a vision tower sees the world's distortions on photographs it never saw.

    python -m iqa_lightning.tiny.seeing                          # the committed tiny LLaVA
    python -m iqa_lightning.tiny.seeing --pretrained <folder>    # a folder pretrain wrote
    python -m iqa_lightning.tiny.seeing --random                 # the same tower, untrained
    python -m iqa_lightning.tiny.seeing --seen-photos            # test on the seen photographs

A learning run on ``dataset=learning`` can only rate what its model sees. This report measures
the seeing alone, in a minute, before a 15-minute learning benchmark: the tower is frozen, and
one linear probe per distortion kind is fitted on its pooled patch features (the features the
language model reads) for scenes of the photographs pre-training saw; the probes then read the
held-out photographs (:data:`~iqa_lightning.tiny.world.HELD_OUT_PHOTOS`) at the learning set's
held-out strengths. Per kind it gives how often a present distortion is detected (overall and
per true strength word, alone and with another distortion), how often an absent one is
imagined, and how often the strength word is right when present. Its last figure,
``seeing srcc``, ranks the held-out images by the quality law
(:func:`~iqa_lightning.tiny.world.quality`) applied to the probed strengths: what a model that
rates perfectly from what this tower sees would reach. ``oracle srcc`` applies the law to the
true strength words instead (the ceiling the four words leave).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from iqa_lightning.tiny.world import (
    DISTORTION_KINDS,
    HELD_OUT_PHOTOS,
    SEEN_PHOTOS,
    STRENGTH_NAMES,
    quality,
    random_scene,
    render,
    strength_classes,
)

__all__ = ["SeeingReport", "pooled_features", "seeing_report", "strength_classes"]

#: Strength each class stands for when the law is applied: none, then the middle of each word's
#: quarter of (0, 1].
CLASS_STRENGTHS = np.array([0.0, *[(i + 0.5) / len(STRENGTH_NAMES) for i in range(4)]])


@dataclass
class SeeingReport:
    """Per-kind probe results and the quality ranking they allow on the held-out photographs.

    Attributes:
        kinds: kind name -> ``detected`` (share of present distortions probed present),
            ``imagined`` (share of absent ones probed present), ``strength`` (share of present
            ones whose strength word is right), ``present`` (how many test images have it),
            ``detected_<word>`` for each strength word (``detected_slight`` ..
            ``detected_severe``: the detection rate of the distortions of that true strength,
            NaN where the test has none), and ``detected_alone`` / ``detected_with_other``
            (the rate where it is the image's only distortion / where another comes with it;
            ``present_alone`` counts the former).
        srcc: Spearman correlation of the law on the probed strengths with the law on the true
            strengths, over the held-out test images.
        oracle_srcc: The same with the true strength words.
        train: Probe-training scenes; test: held-out test scenes.
    """

    kinds: dict[str, dict[str, float]]
    srcc: float
    oracle_srcc: float
    train: int
    test: int

    def table(self) -> str:
        """A Markdown table, then ``seeing srcc <s> oracle srcc <o>``."""
        words = " | ".join(f"detected {word}" for word in STRENGTH_NAMES)
        lines = [
            f"| kind | present | detected | imagined | strength word | {words} "
            "| detected alone | detected with another |",
            "|---|---|---|---|---|" + "---|" * (len(STRENGTH_NAMES) + 2),
        ]
        for name, row in self.kinds.items():
            by_word = " | ".join(f"{row[f'detected_{word}']:.2f}" for word in STRENGTH_NAMES)
            lines.append(
                f"| {name} | {int(row['present'])} | {row['detected']:.2f} | "
                f"{row['imagined']:.2f} | {row['strength']:.2f} | {by_word} | "
                f"{row['detected_alone']:.2f} | {row['detected_with_other']:.2f} |"
            )
        lines.append(f"seeing srcc {self.srcc:.3f} oracle srcc {self.oracle_srcc:.3f}")
        return "\n".join(lines)


@torch.no_grad()
def pooled_features(backbone, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Mean of the patch features the language model reads (the tower's
    ``vision_feature_layer``), ``[N, width]``, for ``uint8 [N, side, side, 3]`` images."""
    tower = backbone.vision_tower()
    layer = backbone.model.config.vision_feature_layer
    tower.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
        pixels = backbone.normalize(chunk.float() / 255.0)
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        out.append(hidden[:, 1:].mean(dim=1))
    return torch.cat(out)


def _fit_probe(features: torch.Tensor, classes: torch.Tensor, steps: int, seed: int):
    torch.manual_seed(seed)
    probe = torch.nn.Linear(features.shape[1], 1 + len(STRENGTH_NAMES))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(probe(features), classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe


def _law(strengths: np.ndarray) -> np.ndarray:
    kinds = [k.name for k in DISTORTION_KINDS]
    return np.array(
        [
            quality([(k, float(t)) for k, t in zip(kinds, row, strict=True) if t > 0])
            for row in strengths
        ]
    )


def seeing_report(
    backbone,
    train: int = 3000,
    test: int = 384,
    steps: int = 300,
    seed: int = 0,
    seen_photos: bool = False,
) -> SeeingReport:
    """Probe a backbone's frozen vision tower (module docstring).

    Args:
        backbone: A LLaVA-family backbone (``vision_tower()``, ``normalize``, ``model.config``).
        train: Probe-training scenes, drawn as pre-training draws them (seen photographs and
            patterns, augmented).
        test: Test scenes (the held-out photographs unless ``seen_photos``; the learning set's
            test strengths).
        steps: Full-batch Adam steps per probe.
        seed: Seeds the scenes and the probes.
        seen_photos: Test on crops of the photographs pre-training saw (not augmented) instead
            of the held-out ones, at the same strengths: the gap between the two is what
            generalising to unseen photographs costs.
    """
    from scipy.stats import spearmanr

    from iqa_lightning.data.datasets.learning import TEST_STRENGTHS
    from iqa_lightning.tiny.pretrain import build_examples, pretraining_sources

    side = backbone.model.config.vision_config.image_size
    images, scenes = build_examples(train, side, seed, pretraining_sources(), augment=True)
    rng = np.random.default_rng([seed, 1])
    photos = SEEN_PHOTOS if seen_photos else HELD_OUT_PHOTOS
    test_scenes = [random_scene(rng, list(photos), TEST_STRENGTHS) for _ in range(test)]
    test_images = np.stack([np.asarray(render(s, side)) for s in test_scenes])

    features, test_features = (
        pooled_features(backbone, images),
        pooled_features(backbone, test_images),
    )
    mean, std = features.mean(0), features.std(0) + 1e-6
    features, test_features = (features - mean) / std, (test_features - mean) / std
    classes, truth = strength_classes(scenes), strength_classes(test_scenes)

    kinds, probed = {}, np.zeros(truth.shape)
    counts = (truth > 0).sum(axis=1)  # distortions per test image
    for i, kind in enumerate(DISTORTION_KINDS):
        probe = _fit_probe(features, torch.from_numpy(classes[:, i]), steps, seed + i)
        with torch.no_grad():
            probs = probe(test_features).softmax(-1).numpy()
        probed[:, i] = probs @ CLASS_STRENGTHS
        guess, true = probs.argmax(1), truth[:, i]
        present = true > 0
        kinds[kind.name] = {
            "present": float(present.sum()),
            "detected": float((guess[present] > 0).mean()) if present.any() else float("nan"),
            "imagined": float((guess[~present] > 0).mean()) if (~present).any() else float("nan"),
            "strength": float((guess[present] == true[present]).mean())
            if present.any()
            else float("nan"),
        }
        groups = {f"detected_{word}": true == c for c, word in enumerate(STRENGTH_NAMES, start=1)}
        groups["detected_alone"] = present & (counts == 1)
        kinds[kind.name]["present_alone"] = float(groups["detected_alone"].sum())
        groups["detected_with_other"] = present & (counts > 1)
        for key, group in groups.items():
            kinds[kind.name][key] = (
                float((guess[group] > 0).mean()) if group.any() else float("nan")
            )
    true_quality = np.array([quality(s.distortions) for s in test_scenes])
    return SeeingReport(
        kinds=kinds,
        srcc=float(spearmanr(_law(probed), true_quality)[0]),
        oracle_srcc=float(spearmanr(_law(CLASS_STRENGTHS[truth]), true_quality)[0]),
        train=train,
        test=test,
    )


def main(argv: Sequence[str] | None = None) -> SeeingReport:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", help="a folder pretrain wrote (default: the committed one)")
    parser.add_argument(
        "--random", action="store_true", help="the same architecture, randomly initialised"
    )
    parser.add_argument("--train", type=int, default=3000, help="probe-training scenes")
    parser.add_argument("--test", type=int, default=384, help="held-out test scenes")
    parser.add_argument("--steps", type=int, default=300, help="probe steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seen-photos",
        action="store_true",
        help="test on the photographs pre-training saw instead of the held-out ones",
    )
    parser.add_argument("--json", help="also write the report as JSON here")
    args = parser.parse_args(argv)

    from iqa_lightning.tiny.trained import load_tiny_llava

    backbone = load_tiny_llava(args.pretrained)
    if args.random:
        from transformers import LlavaForConditionalGeneration

        torch.manual_seed(args.seed)
        backbone.model = LlavaForConditionalGeneration(backbone.model.config).eval()
    report = seeing_report(
        backbone, args.train, args.test, args.steps, args.seed, seen_photos=args.seen_photos
    )
    print(report.table())
    if args.json:
        from dataclasses import asdict

        with open(args.json, "w") as handle:
            json.dump(asdict(report), handle, indent=2)
    return report


if __name__ == "__main__":
    main()
