"""Real-size LMMs on a GPU: stage-2 padding-prompt training steps per second, peak memory, MFU.

    python tests/benchmarks/bench_gpu.py                          # LLaVA-1.5-7B, Qwen2.5-VL-7B
    python tests/benchmarks/bench_gpu.py --models llava --batch 16 --steps 20
    python tests/benchmarks/bench_gpu.py --tiny                   # the same code on CPU, tiny sizes
    python tests/benchmarks/bench_gpu.py --smoke                  # tiny sizes, one step: still runs?

LLaVA-1.5-7B (CLIP ViT-L/14-336 + Vicuna-7B, 336 px) and Qwen2.5-VL-7B (448 px) are built from
their published configs with random weights (no download) in bf16 on the GPU, with the tiny local
tokenizer (prompts and quality words only need token ids). Each model trains a padding prompt
(``size=30``, SGD) with the backbone frozen (stage 2) under ``torch.autocast(bf16)``, without and
with gradient checkpointing. Per row: images/s over ``--steps`` timed steps after ``--warmup``,
peak allocated memory, and MFU = model FLOPs/s over the bf16 dense peak of the GPU (989 TFLOP/s
for H100 SXM / H200; ``--peak-tflops`` for others). Model FLOPs are counted once per model with
``torch.utils.flop_counter`` on one step without checkpointing (forward + the input-gradient
backward; frozen weights get no weight gradients); the recompute of checkpointing is not
counted, as is usual for MFU.

Without CUDA it prints that it skipped (exit 0) unless ``--tiny``. Not part of the test run;
``--smoke`` (tiny sizes, batch 1, one warm-up and one timed step, on the GPU when there is one)
is, in tests/test_benchmarks_smoke.py on a machine with CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from _common import padding_module
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from iqa_lightning.models.backbones import LlavaBackbone, Qwen2VLBackbone  # noqa: E402
from iqa_lightning.models.backbones.tiny import CLIP_MEAN, CLIP_STD  # noqa: E402
from iqa_lightning.models.backbones.tokenizer import build_tiny_tokenizer  # noqa: E402

PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.0}


def llava_7b(tokenizer, tiny: bool):
    """LLaVA-1.5-7B's architecture (llava-hf/llava-1.5-7b-hf config.json)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    image, patch = (56, 14) if tiny else (336, 14)
    vision = CLIPVisionConfig(
        hidden_size=64 if tiny else 1024, intermediate_size=128 if tiny else 4096,
        num_hidden_layers=2 if tiny else 24, num_attention_heads=4 if tiny else 16,
        image_size=image, patch_size=patch, projection_dim=768, hidden_act="quick_gelu",
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=32064, hidden_size=64 if tiny else 4096,
        intermediate_size=128 if tiny else 11008, num_hidden_layers=2 if tiny else 32,
        num_attention_heads=4 if tiny else 32, num_key_value_heads=4 if tiny else 32,
        max_position_embeddings=4096, rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, projector_hidden_act="gelu",
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image // patch) ** 2, vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )  # fmt: skip
    return config, LlavaBackbone, image


def qwen2_5_vl_7b(tokenizer, tiny: bool):
    """Qwen2.5-VL-7B-Instruct's architecture (its config.json), at 448 px."""
    from transformers import Qwen2_5_VLConfig

    hidden, heads = (64, 4) if tiny else (3584, 28)
    half_head = hidden // heads // 2
    section = [half_head - 2 * (half_head // 3), half_head // 3, half_head // 3]
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2 if tiny else 32, "hidden_size": 32 if tiny else 1280,
            "intermediate_size": 64 if tiny else 3420, "num_heads": 2 if tiny else 16,
            "out_hidden_size": hidden, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "hidden_act": "silu",
            "fullatt_block_indexes": [1] if tiny else [7, 15, 23, 31],
        },
        text_config={
            "vocab_size": 152064, "hidden_size": hidden,
            "intermediate_size": 128 if tiny else 18944, "num_hidden_layers": 2 if tiny else 28,
            "num_attention_heads": heads, "num_key_value_heads": 2 if tiny else 4,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": section},
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )  # fmt: skip
    return config, Qwen2VLBackbone, 112 if tiny else 448


MODELS = {"llava": ("LLaVA-1.5-7B", llava_7b), "qwen": ("Qwen2.5-VL-7B", qwen2_5_vl_7b)}


def build(name: str, device: torch.device, dtype: torch.dtype, tiny: bool, prompt_size: int):
    from transformers import AutoModelForImageTextToText

    tokenizer = build_tiny_tokenizer()
    config, adapter, image_size = MODELS[name][1](tokenizer, tiny)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(default)
    backbone = adapter(model, tokenizer, image_size, CLIP_MEAN, CLIP_STD)
    return padding_module(backbone, lr=60.0, size=prompt_size).to(device)


def step_fn(module, optimizer, pixels, target, device):
    autocast = (
        torch.autocast(device.type, torch.bfloat16) if device.type == "cuda" else nullcontext()
    )

    def step():
        with autocast:
            loss = torch.nn.functional.mse_loss(module(pixels), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(module, batch: int, steps: int, warmup: int, device: torch.device, flops: float | None):
    image = module.backbone.image_size
    pixels = torch.rand(batch, 3, image, image, device=device)
    target = torch.rand(batch, device=device)
    module.train()
    step = step_fn(module, module.configure_optimizers(), pixels, target, device)
    if flops is None:
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops() / batch
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )
    return batch * steps / seconds, peak, flops


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prompt-size", type=int, default=30)
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, runs on CPU")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, batch 1, one step (seconds; on the GPU if any)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        args.tiny, args.batch, args.steps, args.warmup, args.prompt_size = True, 1, 1, 1, 4
    import warnings

    warnings.filterwarnings("ignore")
    if not torch.cuda.is_available() and not args.tiny:
        print("bench_gpu: no CUDA device, skipped (--tiny runs the same code on CPU)")
        return []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"{gpu}, torch {torch.__version__}, batch {args.batch}, bf16 peak {peak} TFLOP/s")
    print(f"{'model':16s} {'checkpointing':>13s} {'img/s':>8s} {'peak GiB':>9s} "
          f"{'TFLOP/img':>10s} {'MFU':>7s}")  # fmt: skip
    rows = []
    for name in args.models:
        module = build(name, device, dtype, args.tiny, args.prompt_size)
        flops = None
        for checkpointing in (False, True):
            module.backbone.set_gradient_checkpointing(checkpointing)
            rate, memory, flops = measure(
                module, args.batch, args.steps, args.warmup, device, flops
            )
            mfu = rate * flops / (peak * 1e12) if peak else float("nan")
            row = {"model": MODELS[name][0], "gradient_checkpointing": checkpointing,
                   "images_per_s": rate, "peak_gib": memory, "tflop_per_image": flops / 1e12,
                   "mfu": mfu, "device": gpu, "batch": args.batch}  # fmt: skip
            rows.append(row)
            print(f"{row['model']:16s} {str(checkpointing):>13s} {rate:8.2f} {memory:9.1f} "
                  f"{flops / 1e12:10.3f} {mfu:7.1%}")  # fmt: skip
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
