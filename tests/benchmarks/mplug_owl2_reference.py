"""The original mPLUG-Owl2 side: random models saved by Q-Align's own classes, their outputs and
their speed. Runs ONLY in a separate Python with the transformers the original code needs
(4.37.2) and a checkout of https://github.com/Q-Future/Q-Align (its ``q_align/`` package is
imported from ``--reference-code``; nothing of it is copied here).

    # the golden fixture (tests/fixtures/mplug_owl2_tiny/README.md)
    HF_HUB_OFFLINE=1 REF/bin/python tests/benchmarks/mplug_owl2_reference.py \\
        --reference-code Q-Align fixture tests/fixtures/mplug_owl2_tiny
    # a random model of a named size, then the original forward timed on saved pixels
    REF/bin/python tests/benchmarks/mplug_owl2_reference.py --reference-code Q-Align \\
        build OUT --size bench
    REF/bin/python tests/benchmarks/mplug_owl2_reference.py --reference-code Q-Align \\
        time OUT --pixels pixels.safetensors --prompt "..." --reps 3 --rounds 3

``bench_backbones.py`` drives the last two; ``fixture`` writes the equivalence fixture that the
mPLUG-Owl2 golden test reads.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

LEVELS = ["excellent", "good", "fair", "poor", "bad"]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SEED = 1234
PROMPTS = {
    # Q-Align q_align/evaluate/scorer.py: the image after the question, newlines around it
    "q_align": "USER: How would you rate the quality of this image?\n<|image|>\nASSISTANT: "
    "The quality of the image is",
    # the visual-prompt paper (arXiv 2509.03494)
    "visual_prompt": "USER: <|image|>Rate the technical quality of the image. ASSISTANT:",
}
# Model sizes: language model (LLaMA), ViT and abstractor.
SIZES = {
    "fixture": {
        "llm": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4},
        "vision": {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "image_size": 64, "patch_size": 8},
        "abstractor": {"hidden_size": 32, "intermediate_size": 88, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_learnable_queries": 8},
    },
    "bench": {
        "llm": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
                "num_attention_heads": 8},
        "vision": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                   "num_attention_heads": 8, "image_size": 224, "patch_size": 14},
        "abstractor": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 2,
                       "num_attention_heads": 8, "num_learnable_queries": 64},
    },
}  # fmt: skip

# ------------------------------------------------------------------------------- tokenizer
_SENTENCES = [
    "USER: How would you rate the quality of this image?",
    "ASSISTANT: The quality of the image is {w}.",
    "USER: Rate the technical quality of the image. ASSISTANT: The image is {w}.",
    "How would you rate the aesthetics of this image? The aesthetics of the image is {w}.",
    "How would you rate the quality of this video? The quality of the video is {w}.",
    "The photo of the astronaut looks {w}, the cup of coffee looks {w} and the cat looks {w}.",
    "Can you evaluate the quality of the image? The image is blurry, noisy, dark or bright.",
    "The image has low contrast, jpeg compression artifacts, color saturation and pixelation.",
    "Describe the quality of the image in detail. The overall quality is {w}.",
    "A {w} picture has sharp details, natural colors and no visible noise.",
    "Which distortion does the image have? Answer with the option's letter: A, B, C or D.",
    "The model predicts a score between 1 and 5 for every image in the test set of 2024 images.",
    "Is the lighting of this image {w}? Yes, it is {w}. No, it is not.",
]
_EXTRA_WORDS = ["fine", "high", "low", "great", "terrible", "perfect", "average", "sharp",
                "blurry", "noisy", "clear", "bright", "dark"]  # fmt: skip


def _corpus() -> list[str]:
    rng = random.Random(0)
    words = LEVELS * 6 + _EXTRA_WORDS
    lines = [t.format(w=rng.choice(words)) for t, _ in itertools.product(_SENTENCES, range(12))]
    for word in LEVELS:
        lines += [f"The quality of the image is {word}.", f"{word.capitalize()} quality."] * 10
    rng.shuffle(lines)
    return lines


def _added_token(content: str, typed: bool = True) -> dict:
    token = {"content": content, "lstrip": False, "normalized": True, "rstrip": False,
             "single_word": False}  # fmt: skip
    return {"__type": "AddedToken", **token} if typed else token


def write_tokenizer(out: Path) -> None:
    """A real SentencePiece BPE model trained with LLaMA's options (byte fallback, split digits,
    identity normalisation, dummy prefix, <unk>=0 <s>=1 </s>=2, no pad piece) at vocabulary 600,
    with the slow ``LlamaTokenizer`` files of the published mPLUG-Owl2 checkpoints."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, model_type="bpe",
        vocab_size=600, character_coverage=0.99995, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    for word in LEVELS:
        pieces = sp.encode(word, out_type=str)
        if pieces != ["\u2581" + word]:
            raise SystemExit(f"level word {word!r} is not one token: {pieces}")
    (out / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": _added_token("<s>"),
        "clean_up_tokenization_spaces": False, "eos_token": _added_token("</s>"),
        "legacy": True, "model_max_length": 2048, "pad_token": None, "padding_side": "right",
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": _added_token("<unk>"),
    }  # fmt: skip
    special = {
        "bos_token": _added_token("<s>", False), "eos_token": _added_token("</s>", False),
        "pad_token": "<unk>", "unk_token": _added_token("<unk>", False),
    }  # fmt: skip
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", special)


def write_processor(out: Path, image_size: int) -> None:
    """``preprocessor_config.json`` as the published checkpoints ship it (CLIP statistics,
    bicubic, shortest side then centre crop), at ``image_size``."""
    _write_json(out / "preprocessor_config.json", {
        "crop_size": image_size, "do_center_crop": True, "do_normalize": True,
        "do_resize": True, "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3, "size": image_size,
    })  # fmt: skip


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------------------- model
def redirect_hub_loads(folder: Path) -> None:
    """``MPLUGOwl2LlamaForCausalLM.__init__`` loads q-future/one-align's tokenizer and image
    processor from the Hub; send those two loads to ``folder`` (offline)."""
    import q_align.model.modeling_mplug_owl2 as original
    from transformers import AutoTokenizer, CLIPImageProcessor

    def local(cls):
        class Local:
            @staticmethod
            def from_pretrained(name, *args, **kwargs):
                if name != "q-future/one-align":
                    raise SystemExit(f"unexpected Hub load {name!r}")
                return cls.from_pretrained(str(folder), *args, **kwargs)

        return Local

    original.AutoTokenizer = local(AutoTokenizer)
    original.CLIPImageProcessor = local(CLIPImageProcessor)


def original_config(size: dict, vocab_size: int):
    """The original ``MPLUGOwl2Config`` with the keys the published config.json files hold."""
    from q_align.model.configuration_mplug_owl2 import (
        MPLUGOwl2Config,
        MplugOwlVisionConfig,
        MplugOwlVisualAbstractorConfig,
    )

    vision = MplugOwlVisionConfig(**size["vision"], projection_dim=size["vision"]["hidden_size"],
                                  layer_norm_eps=1e-6)  # fmt: skip
    grid = size["vision"]["image_size"] // size["vision"]["patch_size"]
    abstractor = MplugOwlVisualAbstractorConfig(
        **size["abstractor"], layer_norm_eps=1e-6, grid_size=grid,
        encoder_hidden_size=size["vision"]["hidden_size"],
    )  # fmt: skip
    return MPLUGOwl2Config(
        visual_config={"visual_model": vision.to_dict(), "visual_abstractor": abstractor.to_dict()},
        vocab_size=vocab_size, num_key_value_heads=size["llm"]["num_attention_heads"],
        max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, architectures=["MPLUGOwl2LlamaForCausalLM"], image_aspect_ratio="pad",
        tune_visual_abstractor=True, freeze_vision_model=False, image_grid_pinpoints=None,
        torch_dtype="float32", **size["llm"],
    )  # fmt: skip


def randomize(model, seed: int) -> None:
    """Random normal values in every parameter: weights scaled by 1/sqrt(fan_in), norm scales
    around 1 with random shifts, non-zero biases, embeddings / queries / class token N(0, 1),
    each multiway branch (text 0, visual 1) drawn on its own. Buffers (the abstractor's sin-cos
    position tables) keep the values the original computes."""
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name or "ffn_ln" in name:
                value = 1.0 + 0.3 * noise if leaf == "weight" else 0.2 * noise
            elif leaf == "bias":
                value = 0.1 * noise
            elif p.dim() >= 2 and "embed_tokens" not in name and "position_embedding" not in name:
                value = noise / float(np.prod(p.shape[1:])) ** 0.5
            else:
                value = noise
            p.copy_(value)


def build(out: Path, size_name: str, seed: int = SEED) -> None:
    """Tokenizer, processor and a random model of ``SIZES[size_name]`` saved by the original
    ``save_pretrained`` (``pytorch_model.bin``, original parameter names); reloading it must
    give back every tensor."""
    import torch
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    size = SIZES[size_name]
    write_tokenizer(out)
    write_processor(out, size["vision"]["image_size"])
    redirect_hub_loads(out)
    from q_align.model import MPLUGOwl2LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(out), use_fast=False)
    config = original_config(size, len(tokenizer))
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = MPLUGOwl2LlamaForCausalLM(config)
    randomize(model, seed)
    built = {k: v.clone() for k, v in model.state_dict().items()}
    model.save_pretrained(str(out), safe_serialization=False)
    loaded = load_original(out).state_dict()
    if loaded.keys() != built.keys() or not all(torch.equal(loaded[k], built[k]) for k in built):
        raise SystemExit(f"{out}: the saved model does not load back identically")


def load_original(folder: Path, attn_implementation: str = "eager"):
    """The model as Q-Align's builder loads it, in fp32 with eager attention (scorer.py's)."""
    import torch

    redirect_hub_loads(folder)
    from q_align.model import MPLUGOwl2LlamaForCausalLM

    return MPLUGOwl2LlamaForCausalLM.from_pretrained(
        str(folder), torch_dtype=torch.float32, attn_implementation=attn_implementation,
        low_cpu_mem_usage=True,
    ).eval()  # fmt: skip


def prompt_ids(tokenizer, prompt: str):
    """Prompt ids with the image index -200 spliced in by the original ``tokenizer_image_token``."""
    from q_align.constants import IMAGE_TOKEN_INDEX
    from q_align.mm_utils import tokenizer_image_token

    return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")


# --------------------------------------------------------------------------------- fixture
def fixture_images():
    """Three skimage photos made small and non-square (a portrait and two landscapes, one with
    an odd width - height difference) so that expand2square pads both ways."""
    from PIL import Image
    from skimage import data

    def make(array, size, box=None):
        img = Image.fromarray(array)
        img = img.crop(box) if box is not None else img
        return img.convert("RGB").resize(size, Image.LANCZOS)

    return {
        "astronaut": make(data.astronaut(), (70, 96), box=(100, 0, 470, 512)),
        "coffee": make(data.coffee(), (96, 64)),
        "chelsea": make(data.chelsea(), (96, 63)),
    }


def fixture(out: Path) -> None:
    """Build the tiny model and record, with the original code, what the golden test checks."""
    import numpy as np
    import torch
    from PIL import Image
    from q_align.mm_utils import expand2square
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, CLIPImageProcessor

    build(out, "fixture")
    model = load_original(out)
    tokenizer = AutoTokenizer.from_pretrained(str(out), use_fast=False)
    processor = CLIPImageProcessor.from_pretrained(str(out))
    (out / "images").mkdir(exist_ok=True)
    names = []
    for name, img in fixture_images().items():
        img.save(out / "images" / f"{name}.png", optimize=True)
        names.append(name)
    images = {n: Image.open(out / "images" / f"{n}.png").convert("RGB") for n in names}
    # scorer.py: pad to a square with the mean colour, then the CLIP processor
    background = tuple(int(x * 255) for x in processor.image_mean)
    squares = [expand2square(images[n], background) for n in names]
    pixel_values = processor.preprocess(squares, return_tensors="pt")["pixel_values"]
    level_ids = [ids[1] for ids in tokenizer(LEVELS)["input_ids"]]
    if level_ids != model.preferential_ids_:
        raise SystemExit(f"level ids {level_ids} != the model's {model.preferential_ids_}")
    weights = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    tensors = {"pixel_values": pixel_values.contiguous()}
    for n, square in zip(names, squares, strict=True):
        tensors[f"square.{n}"] = torch.from_numpy(np.asarray(square).copy())
    with torch.inference_mode():
        tensors["vision_last_hidden_state"] = (
            model.get_model().vision_model(pixel_values).last_hidden_state.contiguous()
        )
        tensors["image_features"] = model.encode_images(pixel_values).contiguous()
    golden = {
        "images": names,
        "image_sizes": {n: list(images[n].size) for n in names},
        "expand2square_background": list(background),
        "level_words": LEVELS,
        "level_ids": level_ids,
        "level_weights": weights.tolist(),
        "prompts": {},
    }
    for key, prompt in PROMPTS.items():
        ids = prompt_ids(tokenizer, prompt)
        with torch.inference_mode():
            logits = model(ids.repeat(len(names), 1), images=pixel_values)["logits"][:, -1]
            single = torch.cat([
                model(ids[None], images=pixel_values[i : i + 1])["logits"][:, -1]
                for i in range(len(names))
            ])  # fmt: skip
        if not torch.allclose(logits, single, atol=1e-5):
            raise SystemExit(f"{key}: batched and single-image logits differ")
        probs = torch.softmax(logits[:, level_ids].float(), dim=-1)
        tensors[f"{key}.input_ids"] = ids
        tensors[f"{key}.logits"] = logits.float().contiguous()
        golden["prompts"][key] = {
            "prompt": prompt,
            "input_ids": ids.tolist(),
            "tokens": [tokenizer.convert_ids_to_tokens(int(i)) if i >= 0 else int(i) for i in ids],
            "argmax_token_ids": logits.argmax(-1).tolist(),
            "level_probs": probs.tolist(),
            "scores": (probs @ weights).tolist(),
        }
        print(key, "scores", [round(s, 6) for s in golden["prompts"][key]["scores"]])
    save_file(tensors, str(out / "golden.safetensors"), metadata={"format": "pt"})
    _write_json(out / "golden.json", golden)


# ---------------------------------------------------------------------------------- timing
def time_forward(folder: Path, pixels_file: Path, prompt: str, reps: int, rounds: int,
                 logits_out: Path | None) -> None:  # fmt: skip
    """Seconds per forward of the original model (eager, fp32) on the saved [0, 1] pixels,
    normalised with the processor's statistics; one JSON line on stdout."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, CLIPImageProcessor

    model = load_original(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=False)
    processor = CLIPImageProcessor.from_pretrained(str(folder))
    pixels = load_file(str(pixels_file))["pixels"]
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    pixel_values = (pixels - mean) / std
    ids = prompt_ids(tokenizer, prompt)[None].repeat(len(pixels), 1)

    def forward():
        return model(ids, images=pixel_values, use_cache=False)["logits"][:, -1].float()

    seconds = []
    with torch.inference_mode():
        logits = forward()  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(reps):
                forward()
            seconds.append((time.perf_counter() - start) / reps)
    if logits_out is not None:
        save_file({"logits": logits.contiguous()}, str(logits_out))
    print(json.dumps({"seconds": seconds, "median": statistics.median(seconds),
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "input_ids": ids[0].tolist()}))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-code", required=True, help="a Q-Align checkout")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fixture").add_argument("out", type=Path)
    b = sub.add_parser("build")
    b.add_argument("out", type=Path)
    b.add_argument("--size", choices=sorted(SIZES), default="bench")
    t = sub.add_parser("time")
    t.add_argument("folder", type=Path)
    t.add_argument("--pixels", type=Path, required=True)
    t.add_argument("--prompt", default=PROMPTS["visual_prompt"])
    t.add_argument("--reps", type=int, default=3)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--logits-out", type=Path)
    args = parser.parse_args(argv)
    code = Path(args.reference_code).resolve()
    if not (code / "q_align" / "model" / "modeling_mplug_owl2.py").is_file():
        raise SystemExit(f"--reference-code {code}: no q_align/model/modeling_mplug_owl2.py")
    sys.path.insert(0, str(code))
    import transformers

    if not transformers.__version__.startswith("4.3"):
        raise SystemExit(f"transformers {transformers.__version__}: the original code needs 4.37")
    if args.command == "fixture":
        fixture(args.out)
    elif args.command == "build":
        build(args.out, args.size)
    else:
        time_forward(args.folder, args.pixels, args.prompt, args.reps, args.rounds,
                     args.logits_out)  # fmt: skip


if __name__ == "__main__":
    main()
