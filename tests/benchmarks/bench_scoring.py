"""Scoring throughput: the batched scorer (``IQAModule.forward``: prompt, normalisation, one
forward of the LMM, the word-score head; no generation) against the raw backbone forward
``backbone.model(...)`` on the same batch with its inputs prepared beforehand.

    python tests/benchmarks/bench_scoring.py
    python tests/benchmarks/bench_scoring.py --batch 32 --reps 20 --rounds 7
    python tests/benchmarks/bench_scoring.py --smoke      # one tiny round: does it still run?

Both run in eval mode under ``torch.inference_mode`` in one process; the raw forward gets
ready-made ``input_ids``, ``attention_mask``, ``position_ids`` and ``pixel_values`` and keeps
only the last position's logits (``logits_to_keep=1``), as the scorer does. Rounds alternate the
two; images per second are medians over rounds. Two model sizes.

Goal: scorer >= 0.95x the raw forward. Not part of the test run (pytest ignores
tests/benchmarks); ``--smoke`` is, in tests/test_benchmarks_smoke.py.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import SIZES, fixed_batch, summary, tiny_module

LAST_ONLY = {"use_cache": False, "logits_to_keep": 1}


def timed(fn, reps: int, *args, **kwargs) -> float:
    """Seconds per call of ``fn(*args, **kwargs)``."""
    start = time.perf_counter()
    for _ in range(reps):
        fn(*args, **kwargs)
    return (time.perf_counter() - start) / reps


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=10, help="forwards per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--smoke", action="store_true",
                        help="one round of one forward at batch 2 on the tiny model (seconds)")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = dict(SIZES)
    if args.smoke:
        args.batch, args.reps, args.rounds = 2, 1, 1
        sizes = dict(list(SIZES.items())[:1])
    import warnings

    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'model':32s} {'raw img/s':>10s} {'scorer img/s':>13s} {'ratio':>7s}")
    ratios = {}
    for name, size in sizes.items():
        module = tiny_module(**size).eval()
        backbone = module.backbone
        pixels = fixed_batch(args.batch, backbone.image_size)["pixels"]
        prompt_ids = module.scorer.input_ids  # the scorer's prompt, [1, L]
        ids = prompt_ids.expand(args.batch, -1)
        mask = torch.ones_like(ids)
        prompted = module.prompt(pixels)
        inputs = {
            "input_ids": ids,
            "attention_mask": mask,
            **backbone.text_inputs(ids, mask),
            **backbone.pixel_inputs(prompted),
        }
        with torch.inference_mode():
            torch.testing.assert_close(
                backbone.model(**inputs, **LAST_ONLY).logits[:, -1].float(),
                backbone.next_token_logits(prompted, prompt_ids),
            )
            scorer, raw = [], []
            for _ in range(args.rounds):
                scorer.append(timed(module, args.reps, pixels))
                raw.append(timed(backbone.model, args.reps, **inputs, **LAST_ONLY))
        (scorer_s, _), (raw_s, _) = summary(scorer), summary(raw)
        ratios[name] = raw_s / scorer_s
        print(f"{name:32s} {args.batch / raw_s:10.1f} {args.batch / scorer_s:13.1f} "
              f"{ratios[name]:7.3f}")  # fmt: skip
    return ratios


if __name__ == "__main__":
    main()
