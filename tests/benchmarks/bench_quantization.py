"""Quantised inference on the trained tiny LLaVA (``model=tiny_llava_trained``): the weights'
memory and the SRCC on the learning set's test split (held-out photographs) of int8 and int4
(``model.quantization``, optimum-quanto) against fp32 and bf16, all in this process.

    python tests/benchmarks/bench_quantization.py
    python tests/benchmarks/bench_quantization.py --images 96
    python tests/benchmarks/bench_quantization.py --smoke    # a set of 4 test images, fp32 and int8

Each variant scores the same pixels zero-shot (the module's forward under ``torch.no_grad``,
batch 64). Columns: bytes of the language and vision weights as stored (a quantised weight counts
its integers and scales) and their ratio to fp32; SRCC against the MOS, its difference to fp32's
and to bf16's; the largest score difference to fp32; images per second on this machine's CPU.
The embeddings and the output head stay in full precision (transformers keeps them): at this tiny
size they are a large share of the weights, at 7B a small one (int8 then holds about half of bf16).

Not part of the test run (pytest ignores tests/benchmarks); ``--smoke`` is, in
tests/test_benchmarks_smoke.py.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from iqa_lightning.build import CONFIG_DIR  # noqa: E402
from iqa_lightning.quantization import weight_bytes  # noqa: E402
from iqa_lightning.scorer import Scorer  # noqa: E402


def learning_test_split(n: int | None, small: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (the model's 64 px) and MOS of the learning set's test split (generated offline
    into ``paths.cache_dir`` on first use); ``small``: a set of 4 images per split (smoke)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = ["dataset=learning", "model=tiny_llava_trained", "paths.output_dir=."]
        if small:
            overrides += [f"dataset.{split}_images=4" for split in ("train", "val", "test")]
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    pixels = torch.cat([b["pixels"] for b in batches])[:n]
    return pixels, torch.cat([b["mos_raw"] for b in batches])[:n]


def variant(name: str) -> torch.nn.Module:
    """The zero-shot module of ``name``: fp32, bf16 (fp32 weights cast) or int8 / int4."""
    quantized = name in ("int8", "int4")
    overrides = [f"model.quantization={name}"] if quantized else []
    module = Scorer.from_config(model="tiny_llava_trained", overrides=overrides).module
    if name == "bf16":
        module.backbone.model.to(torch.bfloat16)
    return module.eval()


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="first N test images (all: 192)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--smoke", action="store_true", help="a learning set of 4 test images, fp32 and int8"
    )
    args = parser.parse_args(argv)
    names = ["fp32", "bf16", "int8", "int4"]
    if args.smoke:
        args.images, names = 4, ["fp32", "int8"]
    warnings.filterwarnings("ignore")
    pixels, mos = learning_test_split(args.images, small=args.smoke)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(pixels)} test images of the learning set, model=tiny_llava_trained")  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    scores: dict[str, torch.Tensor] = {}
    for name in names:
        module = variant(name)
        start = time.perf_counter()
        with torch.no_grad():
            scores[name] = torch.cat([module(chunk) for chunk in pixels.split(args.batch)]).float()
        seconds = time.perf_counter() - start
        results[name] = {
            "weight_bytes": weight_bytes(module.backbone.model),
            "srcc": float(spearmanr(scores[name], mos)[0]),
            "images_per_s": len(pixels) / seconds,
        }
    fp32 = results["fp32"]
    head = ["variant", "weights MB", "/ fp32", "SRCC", "- fp32", "- bf16", "max |d score|", "img/s"]
    print(("{:8s} {:>10s} {:>7s} {:>7s} {:>8s} {:>8s} {:>14s} {:>7s}").format(*head))
    for name, r in results.items():
        r["memory_ratio"] = r["weight_bytes"] / fp32["weight_bytes"]
        r["srcc_minus_fp32"] = r["srcc"] - fp32["srcc"]
        r["srcc_minus_bf16"] = r["srcc"] - results["bf16"]["srcc"] if "bf16" in results else None
        r["max_score_diff"] = float((scores[name] - scores["fp32"]).abs().max())
        bf16 = "n/a" if r["srcc_minus_bf16"] is None else f"{r['srcc_minus_bf16']:+.4f}"
        print(f"{name:8s} {r['weight_bytes'] / 1e6:10.2f} {r['memory_ratio']:7.3f} "
              f"{r['srcc']:7.4f} {r['srcc_minus_fp32']:+8.4f} {bf16:>8s} "
              f"{r['max_score_diff']:14.2e} {r['images_per_s']:7.1f}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
