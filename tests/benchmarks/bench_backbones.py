"""Native mPLUG-Owl2 against the original remote code: images per second of one scoring forward
on the same random model and the same inputs, both on CPU in fp32.

    python tests/benchmarks/bench_backbones.py \\
        --reference-python REF/bin/python --reference-code Q-Align
    python tests/benchmarks/bench_backbones.py --reference-python REF/bin/python \\
        --reference-code Q-Align --batch 8 --reps 2 --rounds 3 --pairs 2

``REF`` is a Python with the transformers the original code needs (4.37.2) and ``Q-Align`` a
checkout of https://github.com/Q-Future/Q-Align (see tests/fixtures/mplug_owl2_tiny/README.md).
The original side runs in that Python through ``mplug_owl2_reference.py``: it builds a random
mPLUG-Owl2 of the ``bench`` size (LLaMA hidden 512 x 4 layers, ViT 224 px / patch 14 hidden 256
x 4 layers, abstractor 2 layers with 64 queries) with Q-Align's own classes, saves it in the
original format to a temporary folder, and times ``model(input_ids, images=pixel_values)`` with
eager attention (as Q-Align's scorer runs it). Our side loads that folder with
``MplugOwl2Backbone.from_pretrained(folder, dtype="float32", attn_implementation=...)`` and times
``next_token_logits`` on the same [0, 1] pixels and the visual-prompt paper's prompt
(``USER: <|image|>Rate the technical quality of the image. ASSISTANT:``), with SDPA and eager.
Each of ``--pairs`` pairs runs the original (a fresh process) then ours, ``--rounds`` rounds of
``--reps`` forwards each after one warm-up (our two attention kinds take turns within a round);
images per second are medians over all rounds. The
last-position logits of the two are compared as a check (fp32: expected within 1e-4).

Goal: ours (SDPA) >= 1.0x the original. Last line: ``ratio <x>x``. Not part of the test run
(pytest ignores tests/benchmarks).

``--smoke`` needs no reference Python: our side loads the committed tiny fixture
(tests/fixtures/mplug_owl2_tiny, saved by the original classes) and runs one round of one
forward on its recorded pixels; its logits are compared with the ones the original recorded
there (tests/test_benchmarks_smoke.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REFERENCE = Path(__file__).with_name("mplug_owl2_reference.py")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mplug_owl2_tiny"
QUESTION = "Rate the technical quality of the image."
PROMPT = f"USER: <|image|>{QUESTION} ASSISTANT:"


def reference(args, *command: str) -> str:
    """Run ``mplug_owl2_reference.py`` in the reference Python; its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    cmd = [args.reference_python, str(REFERENCE), "--reference-code", args.reference_code]
    done = subprocess.run([*cmd, *command], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"reference side failed ({' '.join(command[:1])}):\n{tail}")
    return done.stdout


def timed_rounds(fns: dict, reps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, one figure per round; the functions take turns
    within every round (so a busy spell hits them alike), after one warm-up call each."""
    for fn in fns.values():
        fn()
    seconds = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            seconds[name].append((time.perf_counter() - start) / reps)
    return seconds


def load_ours(folder: Path, image_size: int) -> dict:
    """Our backbone on ``folder`` with SDPA and with eager attention."""
    from iqa_lightning.models.backbones import MplugOwl2Backbone

    return {
        impl: MplugOwl2Backbone.from_pretrained(
            str(folder), image_size=image_size, dtype="float32", attn_implementation=impl
        ).eval()
        for impl in ("sdpa", "eager")
    }


def smoke(args) -> float:
    """Our side on the committed fixture, checked against the original's recorded logits."""
    image_size = json.loads((FIXTURE / "preprocessor_config.json").read_text())["crop_size"]
    ours = load_ours(FIXTURE, image_size)
    golden = load_file(str(FIXTURE / "golden.safetensors"))
    sdpa = ours["sdpa"]
    mean, std = (v.reshape(1, 3, 1, 1) for v in (sdpa.image_mean, sdpa.image_std))
    pixels = golden["pixel_values"] * std + mean  # the [0, 1] pixels the fixture normalised
    input_ids = sdpa.encode_prompt(QUESTION)
    if input_ids[0].tolist() != golden["visual_prompt.input_ids"].tolist():
        raise SystemExit(f"prompt ids differ from the fixture's: {input_ids[0].tolist()}")
    fns = {impl: partial(b.next_token_logits, pixels, input_ids) for impl, b in ours.items()}
    with torch.inference_mode():
        times = timed_rounds(fns, args.reps, args.rounds)
        diffs = {
            impl: (fn() - golden["visual_prompt.logits"]).abs().max().item()
            for impl, fn in fns.items()
        }
    print(f"smoke: ours on {FIXTURE.name}, batch {len(pixels)}, no original side")
    print(f"{'forward':28s} {'img/s':>8s} {'max|dlogit| vs recorded original':>34s}")
    for impl, seconds in times.items():
        rate = len(pixels) / statistics.median(seconds)
        print(f"{'ours (' + impl + ')':28s} {rate:8.2f} {diffs[impl]:34.2e}")
    worst = max(diffs.values())
    if worst > 1e-3:
        raise SystemExit(f"our logits differ from the recorded original's by {worst:.2e}")
    return worst


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-python", help="Python with transformers 4.37 (required)")
    parser.add_argument("--reference-code", help="a Q-Align checkout (required)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2, help="forwards per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2, help="original / ours alternations")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--smoke", action="store_true",
                        help="our side only on the tiny fixture, one forward (seconds)")  # fmt: skip
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    if args.smoke:
        args.reps, args.rounds = 1, 1
        return smoke(args)
    for flag in ("reference_python", "reference_code"):
        if not getattr(args, flag):
            parser.error(f"--{flag.replace('_', '-')} is required (or --smoke)")
    if not Path(args.reference_python).is_file():
        raise SystemExit(f"--reference-python {args.reference_python}: no such file")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_mplug_owl2_") as tmp:
        folder, pixels_file = Path(tmp) / "model", Path(tmp) / "pixels.safetensors"
        reference(args, "build", str(folder), "--size", "bench")
        image_size = json.loads((folder / "preprocessor_config.json").read_text())["crop_size"]
        generator = torch.Generator().manual_seed(0)
        pixels = torch.rand(args.batch, 3, image_size, image_size, generator=generator)
        save_file({"pixels": pixels}, str(pixels_file))
        ours = load_ours(folder, image_size)
        input_ids = ours["sdpa"].encode_prompt(QUESTION)
        times = {"original": [], "sdpa": [], "eager": []}
        ref_logits, ref_ids, ref_torch = None, None, None
        for pair in range(args.pairs):
            logits_file = Path(tmp) / f"logits{pair}.safetensors"
            out = reference(
                args, "time", str(folder), "--pixels", str(pixels_file), "--prompt", PROMPT,
                "--reps", str(args.reps), "--rounds", str(args.rounds),
                "--logits-out", str(logits_file),
            )  # fmt: skip
            result = json.loads(out.strip().splitlines()[-1])
            times["original"] += result["seconds"]
            ref_ids = result["input_ids"]
            ref_torch = result["torch"]
            ref_logits = load_file(str(logits_file))["logits"]
            fns = {
                impl: partial(b.next_token_logits, pixels, input_ids) for impl, b in ours.items()
            }
            with torch.inference_mode():
                for impl, seconds in timed_rounds(fns, args.reps, args.rounds).items():
                    times[impl] += seconds
        with torch.inference_mode():
            diffs = {
                impl: (b.next_token_logits(pixels, input_ids) - ref_logits).abs().max().item()
                for impl, b in ours.items()
            }
    print(f"torch {torch.__version__} (original side: torch {ref_torch}, transformers 4.37), "
          f"{args.threads} threads, batch {args.batch}, "
          f"{args.pairs} x {args.rounds} rounds of {args.reps} forwards")  # fmt: skip
    if input_ids[0].tolist() != ref_ids:
        print(f"prompt ids differ: ours {input_ids[0].tolist()} original {ref_ids}")
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    print(f"{'forward':28s} {'img/s':>8s} {'vs original':>12s} {'max|dlogit|':>12s}")
    print(f"{'original (eager, 4.37.2)':28s} {rate['original']:8.2f} {1.0:11.2f}x {'':>12s}")
    for impl in ("sdpa", "eager"):
        print(f"{'ours (' + impl + ')':28s} {rate[impl]:8.2f} "
              f"{rate[impl] / rate['original']:11.2f}x {diffs[impl]:12.2e}")  # fmt: skip
    ratio = rate["sdpa"] / rate["original"]
    print(f"ratio {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
