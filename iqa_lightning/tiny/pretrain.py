"""Pre-train the tiny models that have learned to see: a LLaVA-family LMM and a matching CLIP.

    python -m iqa_lightning.tiny.pretrain                      # both, into iqa_lightning/tiny/trained
    python -m iqa_lightning.tiny.pretrain --steps 20 --out /tmp/t   # a short check run

From random initialisation, on CPU, in minutes: a small CLIP-style ViT, an MLP projector and
a Llama decoder with the SentencePiece tiny tokenizer learn to answer questions about images of
the offline world (:mod:`iqa_lightning.tiny.world`): what the image shows, which distortions it
has and how strong they are. They never see the quality question nor a quality level word, so
scoring quality zero-shot from the level words' logits is weak, as with a general LMM before IQA
tuning. The CLIP (image and text towers) learns contrastively from the same images and their
descriptions; it is RALI's student encoder.

Each model is written as a ``transformers`` folder (``config.json``, ``model.safetensors``,
tokenizer files, ``preprocessor_config.json``) that the normal loaders read
(``model=tiny_llava_trained``, ``rali_encoder=tiny_clip_trained``), with ``recipe.json`` (every
setting, the seed, the final losses, a SHA-256 of the weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from iqa_lightning.models.backbones.tiny import CLIP_MEAN, CLIP_STD, tiny_llava_config
from iqa_lightning.models.backbones.tokenizer import build_tiny_tokenizer
from iqa_lightning.tiny.trained import CLIP_FOLDER, LMM_FOLDER, TRAINED_DIR
from iqa_lightning.tiny.world import (
    DISTORTION_KINDS,
    GREY,
    HELD_OUT_PHOTOS,
    PATTERNS,
    PHOTOS,
    SEEN_PHOTOS,
    STRENGTH_NAMES,
    Scene,
    check_words,
    content,
    distortion_phrase,
    perception_answers,
    random_scene,
    render,
    scene_strengths,
    strength_classes,
)

log = logging.getLogger("iqa_lightning.tiny")


@dataclass
class LMMRecipe:
    """Settings of the tiny LMM's pre-training (all written to ``recipe.json``)."""

    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 128
    num_layers: int = 4
    vision_hidden_size: int = 96
    vision_layers: int = 4
    vocab_size: int = 1024
    samples: int = 24000
    vision_steps: int = 6000
    vision_lr: float = 1e-3
    vision_focus: int = 1200
    vision_pairs: float = 0.0
    vision_regress: float = 0.0
    vision_source_head: bool = False
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0


@dataclass
class CLIPRecipe:
    """Settings of the tiny CLIP's contrastive pre-training."""

    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 64
    projection_dim: int = 48
    num_layers: int = 3
    samples: int = 2560
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 30
    seed: int = 1


def pretraining_sources() -> list[str]:
    """Photographs (less the held-out ones) and patterns that pre-training draws from."""
    return [*SEEN_PHOTOS, *PATTERNS]


def vocabulary_corpus() -> list[str]:
    """Every word pre-training writes, for the tokenizer's merges (content, kinds, strengths)."""
    lines = [f"It shows {text}." for text in [*PHOTOS.values(), *PATTERNS.values()]]
    for kind in DISTORTION_KINDS:
        lines += [f"It has {s} {kind.noun}." for s in STRENGTH_NAMES]
        lines.append(f"{kind.noun.capitalize()} none, {kind.noun} slight.")
    lines += [
        "What does the image show? Which distortions does the image have?",
        "List the distortions of the image.",
        "Describe the image. It has no visible distortion. Slight. Moderate. Strong. Severe.",
    ]
    return lines * 3


def build_examples(
    n: int, side: int, seed: int, sources: Sequence[str], augment: bool = True
) -> tuple[np.ndarray, list[Scene]]:
    """``n`` random scenes of ``sources`` rendered at ``side`` px: ``uint8 [n, side, side, 3]``
    (channel permutations and quarter turns with ``augment``)."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, sources, augment=augment) for _ in range(n)]
    images = np.stack([np.asarray(render(s, side)) for s in scenes])
    return images, scenes


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_lmm(recipe: LMMRecipe):
    """A random tiny LLaVA backbone with the perception-vocabulary SentencePiece tokenizer."""
    from transformers import LlavaForConditionalGeneration

    from iqa_lightning.models.backbones.llava import LlavaBackbone

    tokenizer = build_tiny_tokenizer(recipe.vocab_size, "sentencepiece", vocabulary_corpus())
    config = tiny_llava_config(
        tokenizer,
        recipe.image_size,
        recipe.patch_size,
        recipe.hidden_size,
        recipe.num_layers,
        recipe.vision_hidden_size,
        recipe.vision_layers,
    )
    torch.manual_seed(recipe.seed)
    model = LlavaForConditionalGeneration(config)
    backbone = LlavaBackbone(model, tokenizer, recipe.image_size, CLIP_MEAN, CLIP_STD)
    backbone.model.requires_grad_(True)
    return backbone


def focused_examples(
    per_kind: int, side: int, seed: int
) -> tuple[np.ndarray, list[Scene], list[np.ndarray]]:
    """The vision stage's focused scenes: ``per_kind`` crops of the seen photographs with one
    distortion kind alone (strength uniform in (0.05, 1]), for every kind, then ``per_kind``
    clean crops (augmented). Returns the images, the scenes and one index array per kind
    (:data:`DISTORTION_KINDS` order), the clean ones last."""
    rng = np.random.default_rng([seed, 3])
    photos = list(SEEN_PHOTOS)
    scenes: list[Scene] = []
    pools = []
    for kind in [*DISTORTION_KINDS, None]:
        start = len(scenes)
        while len(scenes) < start + per_kind:
            scene = random_scene(rng, photos, max_distortions=0, augment=True)
            if kind is not None and kind.colour and scene.source in GREY:
                continue
            strength = round(float(rng.uniform(0.05, 1.0)), 4)
            distortions = ((kind.name, strength),) if kind is not None else ()
            scenes.append(replace(scene, distortions=distortions))
        pools.append(np.arange(start, len(scenes)))
    images = np.stack([np.asarray(render(s, side)) for s in scenes])
    return images, scenes, pools


def paired_examples(
    per_kind: int, side: int, seed: int
) -> tuple[np.ndarray, list[Scene], list[np.ndarray]]:
    """The vision stage's paired scenes: for every kind, ``per_kind`` crops of the seen
    photographs with that kind and one other (both strengths uniform in (0.05, 1]). Returns the
    images, the scenes and one index array per kind (:data:`DISTORTION_KINDS` order)."""
    rng = np.random.default_rng([seed, 4])
    names = [kind.name for kind in DISTORTION_KINDS]
    scenes: list[Scene] = []
    pools = []
    for k, kind in enumerate(DISTORTION_KINDS):
        start = len(scenes)
        while len(scenes) < start + per_kind:
            scene = random_scene(rng, list(SEEN_PHOTOS), max_distortions=0, augment=True)
            grey = scene.source in GREY
            if kind.colour and grey:
                continue
            usable = [
                j for j, o in enumerate(DISTORTION_KINDS) if j != k and not (o.colour and grey)
            ]
            pair = sorted([k, int(rng.choice(usable))])
            strengths = [round(float(rng.uniform(0.05, 1.0)), 4) for _ in pair]
            distortions = tuple((names[j], t) for j, t in zip(pair, strengths, strict=True))
            scenes.append(replace(scene, distortions=distortions))
        pools.append(np.arange(start, len(scenes)))
    images = np.stack([np.asarray(render(s, side)) for s in scenes])
    return images, scenes, pools


def vision_labels(scenes: Sequence[Scene], sources: Sequence[str]) -> torch.Tensor:
    """``[N, 1 + kinds]`` class labels: the source, then each kind's strength class (0: none,
    1-4: slight .. severe)."""
    index = torch.tensor([[sources.index(scene.source)] for scene in scenes], dtype=torch.long)
    return torch.cat([index.reshape(len(scenes), 1), torch.from_numpy(strength_classes(scenes))], 1)


def _optimise(
    params,
    loss_at,
    steps: int,
    lr: float,
    warmup: int,
    weight_decay: float,
    name: str,
    log_every: int,
) -> list[float]:
    """AdamW with warm-up then cosine decay, gradients clipped at norm 1: ``steps`` steps of
    ``loss_at(step)``; returns the per-step losses (logged every ``log_every`` steps)."""
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, steps, warmup))
    losses, start = [], time.time()
    for step in range(steps):
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % log_every == 0 or step == steps - 1:
            recent, elapsed = np.mean(losses[-log_every:]), time.time() - start
            log.info("%s step %d/%d loss %.4f (%.0f s)", name, step, steps, recent, elapsed)
    return losses


def _save_folder(model, tokenizer, size: int, mean, std, recipe, losses, out: Path) -> Path:
    """Write a trained folder: weights (safetensors), tokenizer, the image processor (square
    ``size`` crops, ``mean`` / ``std``), ``recipe.json`` and ``README.md``."""
    from transformers import CLIPImageProcessor

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(mean),
        image_std=list(std),
    ).save_pretrained(out)
    _write_recipe(out, asdict(recipe), losses)
    write_readme(out)
    return out


def train_vision(backbone, images: np.ndarray, scenes, recipe: LMMRecipe, log_every: int = 50):
    """Stage A, as a LLaVA's vision tower comes pre-trained: the tower learns every distortion
    kind's strength class (and, with ``recipe.vision_source_head``, which photograph or pattern
    each image is) from the mean of the patch features it hands the language model (temporary
    linear heads, dropped after). Returns the losses.

    With ``recipe.vision_focus`` > 0 (the default) each step is about one kind, in turn: half
    the batch has that kind alone, a quarter is clean, a quarter has one other kind alone
    (:func:`focused_examples`, ``vision_focus`` scenes per kind). With ``vision_focus=0`` its
    batches are drawn from the pre-training mix instead, where a kind is in about one image in
    eight, among other distortions and patterns: that tower barely learns JPEG blocks and
    pixelation, and with the source head it sees the held-out photographs less well (measured
    in docs/learning.md, "One kind at a time").

    Two options, off by default (measured in docs/learning.md, "Two kinds at once"): for the
    last ``recipe.vision_pairs`` share of the steps the kind also comes with a second one, as in
    the learning set (a quarter of the batch has the kind alone, a quarter has it with another,
    :func:`paired_examples`; of the half without it, three eighths are clean, three eighths have
    one other kind alone and a quarter has two other kinds); and with ``recipe.vision_regress``
    > 0 a linear head also regresses the eight strengths (0 when absent), its mean squared
    error weighted by that figure.
    """
    sources = pretraining_sources()
    if 0 < recipe.vision_focus < recipe.batch_size // 2:
        raise ValueError(
            f"vision_focus={recipe.vision_focus} is below half the batch "
            f"({recipe.batch_size // 2}): each step draws that many scenes of one kind"
        )
    if not 0.0 <= recipe.vision_pairs <= 1.0:
        raise ValueError(f"vision_pairs={recipe.vision_pairs} is a share of the steps, in [0, 1]")
    if recipe.vision_pairs > 0 and recipe.vision_focus <= 0:
        raise ValueError(
            f"vision_pairs={recipe.vision_pairs} needs vision_focus > 0: the paired steps draw "
            "one kind at a time too"
        )
    kinds, size = len(DISTORTION_KINDS), recipe.batch_size
    if recipe.vision_focus > 0:
        images, scenes, pools = focused_examples(
            recipe.vision_focus, recipe.image_size, recipe.seed
        )
        if recipe.vision_pairs > 0:
            paired_images, paired_scenes, paired = paired_examples(
                recipe.vision_focus, recipe.image_size, recipe.seed
            )
            paired = [pool + len(scenes) for pool in paired]
            images = np.concatenate([images, paired_images])
            scenes = [*scenes, *paired_scenes]
    labels = vision_labels(scenes, sources)
    if not recipe.vision_source_head:
        labels = labels[:, 1:]
    tower = backbone.vision_tower()
    width = tower.config.hidden_size
    heads = torch.nn.ModuleList(
        ([torch.nn.Linear(width, len(sources))] if recipe.vision_source_head else [])
        + [torch.nn.Linear(width, 1 + len(STRENGTH_NAMES)) for _ in DISTORTION_KINDS]
    )
    params = [*tower.parameters(), *heads.parameters()]
    strengths = torch.from_numpy(scene_strengths(scenes))  # 0 when absent
    if recipe.vision_regress > 0:  # a head for the eight strengths themselves
        regress = torch.nn.Linear(width, kinds)
        params += list(regress.parameters())
    tower.train()
    rng = np.random.default_rng(recipe.seed + 2)
    layer = backbone.model.config.vision_feature_layer

    if recipe.vision_focus > 0:  # for each kind, the scenes with another kind alone
        others = [np.concatenate(pools[:k] + pools[k + 1 : kinds]) for k in range(kinds)]
    if recipe.vision_pairs > 0:  # for each kind, the paired scenes without it
        pairs = np.concatenate(paired)
        without = [pairs[strengths[pairs, k].numpy() == 0] for k in range(kinds)]
    first_paired = round((1.0 - recipe.vision_pairs) * recipe.vision_steps)

    def draw(pool: np.ndarray, count: int) -> np.ndarray:
        return rng.choice(pool, size=count, replace=False)

    def batch(step: int) -> np.ndarray:
        if recipe.vision_focus <= 0:
            return rng.choice(len(scenes), size=size, replace=False)
        kind, half, quarter = step % kinds, size // 2, size // 4
        if recipe.vision_pairs <= 0 or step < first_paired:
            return np.concatenate([
                draw(pools[kind], half), draw(pools[kinds], quarter),
                draw(others[kind], size - half - quarter),
            ])  # fmt: skip
        clean, two_others = 3 * size // 16, size // 8
        return np.concatenate([
            draw(pools[kind], quarter), draw(paired[kind], half - quarter),
            draw(pools[kinds], clean), draw(without[kind], two_others),
            draw(others[kind], size - half - clean - two_others),
        ])  # fmt: skip

    def loss_at(step: int) -> torch.Tensor:
        index = batch(step)
        pixels = backbone.normalize(_pixels(images[index]))
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        pooled = hidden[:, 1:].mean(dim=1)
        target = labels[index]
        loss = sum(
            torch.nn.functional.cross_entropy(head(pooled), target[:, i])
            for i, head in enumerate(heads)
        ) / len(heads)
        if recipe.vision_regress > 0:
            error = torch.nn.functional.mse_loss(regress(pooled), strengths[index])
            loss = loss + recipe.vision_regress * error
        return loss

    return _optimise(
        params, loss_at, recipe.vision_steps, recipe.vision_lr, recipe.warmup,
        recipe.weight_decay, "vision", log_every,
    )  # fmt: skip


def train_lmm(recipe: LMMRecipe, log_every: int = 50) -> tuple[object, list[float]]:
    """Pre-train the tiny LMM in two stages, as LLaVA is built on a pre-trained vision tower:
    the vision tower first (:func:`train_vision`), then the projector and the language model on
    the perception answers with the tower frozen. Returns the backbone and the second stage's
    per-step losses."""
    images, scenes = build_examples(
        recipe.samples, recipe.image_size, recipe.seed, pretraining_sources(), augment=True
    )
    backbone = build_lmm(recipe)
    if recipe.vision_steps > 0:
        train_vision(backbone, images, scenes, recipe)
        backbone.vision_tower().requires_grad_(False)
    rng = np.random.default_rng(recipe.seed + 1)
    model = backbone.model
    model.train()

    def loss_at(step: int) -> torch.Tensor:
        index = rng.choice(len(scenes), size=recipe.batch_size, replace=False)
        encoded = []
        for i in index:
            turns = perception_answers(scenes[i], rng)
            for question, answer in turns:
                check_words(question + " " + answer)
            encoded.append(backbone.encode_conversation(turns))
        ids, mask, labels = backbone.pad_conversations(encoded)
        return backbone.lm_loss(_pixels(images[index]), ids, mask, labels)

    trained = [p for p in model.parameters() if p.requires_grad]
    losses = _optimise(
        trained, loss_at, recipe.steps, recipe.lr, recipe.warmup, recipe.weight_decay, "lmm",
        log_every,
    )  # fmt: skip
    backbone.freeze()
    return backbone, losses


def save_lmm(backbone, recipe: LMMRecipe, losses: list[float], out: Path) -> Path:
    """Write the LMM folder (transformers layout + ``recipe.json``)."""
    return _save_folder(
        backbone.model, backbone.tokenizer, recipe.image_size, CLIP_MEAN, CLIP_STD, recipe,
        losses, out,
    )  # fmt: skip


def _write_recipe(out: Path, settings: dict, losses: list[float]) -> None:
    tail = max(1, len(losses) // 20)
    record = {
        "settings": settings,
        "held_out_photos": list(HELD_OUT_PHOTOS),
        "first_loss": float(np.mean(losses[:tail])),
        "final_loss": float(np.mean(losses[-tail:])),
        "steps": len(losses),
        "torch": torch.__version__,
        "sha256": {p.name: _sha256(p) for p in sorted(out.glob("*.safetensors"))},
    }
    (out / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")


README = """# {title}

Trained in this repository from random initialisation, offline, on CPU:

    python -m iqa_lightning.tiny.pretrain{only}

{what}

- Data: crops of the photographs scikit-image and matplotlib ship (less the held-out ones:
  {held_out}) and generated patterns, each with 0-2 distortions of known kind and strength
  (`iqa_lightning/tiny/world.py`); the text never uses a quality level word.
- Recipe (`recipe.json` holds every setting): {settings}.
- Loss: {first_loss:.3f} at the start, {final_loss:.3f} at the end ({steps} steps, torch {torch}).
- Content hash (SHA-256 of the weights): {sha}.

Loaded by `{preset}` through the normal loaders; `pretrained=<folder>` loads another folder
written by `python -m iqa_lightning.tiny.pretrain --out <folder>`.
"""
_FOLDERS = {
    LMM_FOLDER: (
        "The trained tiny LLaVA",
        " --only lmm",
        "A LLaVA-family model (CLIP ViT, MLP projector, Llama decoder, SentencePiece tokenizer) "
        "that learned to say what an image shows\nand which distortions it has, how strong; it "
        "never saw the quality question nor a level word, so\nits zero-shot quality scores are "
        "weak, as a general LMM's are before IQA tuning.",
        "model=tiny_llava_trained",
    ),
    CLIP_FOLDER: (
        "The trained tiny CLIP",
        " --only clip",
        "A CLIP (image and text towers) trained contrastively on the same images and their "
        "descriptions: RALI's student\nencoder on the trained tiny LMM.",
        "rali_encoder=tiny_clip_trained",
    ),
}


def write_readme(folder: Path) -> Path:
    """Write ``README.md`` beside a trained folder's ``recipe.json``: recipe, seed, hash."""
    record = json.loads((folder / "recipe.json").read_text())
    title, only, what, preset = _FOLDERS[folder.name]
    settings = ", ".join(f"{k} {v}" for k, v in record["settings"].items())
    sha = "; ".join(f"`{name}` {digest}" for name, digest in record["sha256"].items())
    text = README.format(
        title=title, only=only, what=what, preset=preset, settings=settings, sha=sha,
        held_out=", ".join(record["held_out_photos"]),
        **{k: record[k] for k in ("first_loss", "final_loss", "steps", "torch")},
    )  # fmt: skip
    path = folder / "README.md"
    path.write_text(text)
    return path


def clip_description(scene: Scene) -> str:
    """The text paired with a scene's image for contrastive training."""
    text = f"{content(scene)}, with {distortion_phrase(scene)}"
    check_words(text)
    return text


def train_clip(recipe: CLIPRecipe, log_every: int = 50):
    """Pre-train the tiny CLIP contrastively; returns the encoder and the per-step losses."""
    from iqa_lightning.models.rali.clip import build_tiny_clip

    images, scenes = build_examples(
        recipe.samples, recipe.image_size, recipe.seed, pretraining_sources()
    )
    texts = [clip_description(s) for s in scenes]
    encoder = build_tiny_clip(
        recipe.image_size, recipe.patch_size, recipe.hidden_size, recipe.projection_dim,
        recipe.num_layers, recipe.seed,
    )  # fmt: skip
    model = encoder.model
    model.train().requires_grad_(True)
    mean = torch.tensor(encoder.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.image_std).view(1, 3, 1, 1)
    rng = np.random.default_rng(recipe.seed + 1)

    def loss_at(step: int) -> torch.Tensor:
        index = rng.choice(len(scenes), size=recipe.batch_size, replace=False)
        tokens = encoder.tokenizer(
            [texts[i] for i in index], padding=True, truncation=True, max_length=77,
            return_tensors="pt",
        )  # fmt: skip
        return model(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            pixel_values=(_pixels(images[index]) - mean) / std,
            return_loss=True,
        ).loss

    losses = _optimise(
        model.parameters(), loss_at, recipe.steps, recipe.lr, recipe.warmup, 0.01, "clip",
        log_every,
    )  # fmt: skip
    model.eval().requires_grad_(False)
    return encoder, losses


def save_clip(encoder, recipe: CLIPRecipe, losses: list[float], out: Path) -> Path:
    """Write the CLIP folder as ``load_clip`` reads it."""
    return _save_folder(
        encoder.model, encoder.tokenizer, recipe.image_size, encoder.image_mean,
        encoder.image_std, recipe, losses, out,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=TRAINED_DIR, help="folder for both models")
    parser.add_argument("--steps", type=int, default=None, help="LMM steps (default: the recipe's)")
    parser.add_argument("--vision-steps", type=int, default=None, help="vision tower steps")
    parser.add_argument("--clip-steps", type=int, default=None, help="CLIP steps")
    parser.add_argument("--samples", type=int, default=None, help="LMM pre-training images")
    parser.add_argument(
        "--vision-focus", type=int, default=None,
        help="vision stage: scenes per kind for one-kind-at-a-time batches (0: the mix)",
    )  # fmt: skip
    parser.add_argument(
        "--vision-pairs", type=float, default=None,
        help="vision stage: share of the steps (the last) whose kind comes with a second one",
    )  # fmt: skip
    parser.add_argument(
        "--vision-regress", type=float, default=None,
        help="vision stage: weight of a head that regresses the eight strengths (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--vision-source-head", action=argparse.BooleanOptionalAction, default=None,
        help="vision stage: also learn which photograph or pattern each image is",
    )  # fmt: skip
    parser.add_argument("--only", choices=["lmm", "clip"], default=None, help="train one model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.only in (None, "lmm"):
        recipe = LMMRecipe()
        if args.steps is not None:
            recipe.steps = args.steps
        if args.samples is not None:
            recipe.samples = args.samples
        if args.vision_steps is not None:
            recipe.vision_steps = args.vision_steps
        if args.vision_focus is not None:
            recipe.vision_focus = args.vision_focus
        if args.vision_pairs is not None:
            recipe.vision_pairs = args.vision_pairs
        if args.vision_regress is not None:
            recipe.vision_regress = args.vision_regress
        if args.vision_source_head is not None:
            recipe.vision_source_head = args.vision_source_head
        backbone, losses = train_lmm(recipe)
        print(f"lmm: loss {losses[0]:.3f} -> {np.mean(losses[-20:]):.3f}; "
              f"{save_lmm(backbone, recipe, losses, args.out / LMM_FOLDER)}")  # fmt: skip
    if args.only in (None, "clip"):
        recipe = CLIPRecipe()
        if args.clip_steps is not None:
            recipe.steps = args.clip_steps
        encoder, losses = train_clip(recipe)
        print(f"clip: loss {losses[0]:.3f} -> {np.mean(losses[-20:]):.3f}; "
              f"{save_clip(encoder, recipe, losses, args.out / CLIP_FOLDER)}")  # fmt: skip


if __name__ == "__main__":
    main()
