"""RALI's LLM-free scorer against the LMM scorer it replaces: images/s, peak memory, parameters.

    python tests/benchmarks/bench_rali.py                                   # 7B teacher vs ViT-L/14-336
    python tests/benchmarks/bench_rali.py --teacher-size tiny --student-size tiny --batch 4
    python tests/benchmarks/bench_rali.py --device cuda --batch 16          # the paper's setting

Both scorers have random weights built from configs (no download) at the sizes chosen:

* teacher ``7b``: LLaVA-1.5-7B (CLIP ViT-L/14-336 tower, 2-layer projector, Llama-2-7B with a
  32064-word vocabulary) in bf16, scoring as the package does (one forward of the Q-Align prompt,
  fp32 log-softmax over the quality words; no generation); ``tiny``: the test LLaVA.
* student ``l14_336``: RALI's scorer on CLIP ViT-L/14-336 (768-d embeddings, PCA 768 -> 512,
  K = 250 basis vectors) in ``--student-dtype`` (fp32 as the reference runs it); ``tiny``: the
  tiny CLIP.

Each scorer runs in its own child process (so its peak memory is its own): build, one warm-up
forward, then ``--reps`` timed forwards of the same seeded ``[batch, 3, R, R]`` images (each
scorer at its own input size, resized from one set of images). Peak memory is the child's peak
resident set on CPU, ``torch.cuda.max_memory_allocated`` on a GPU. Parameters are those each
scorer runs: the whole LLaVA (vision tower, projector, language model and its head) against
RALI's image tower + projection, PCA and basis (CLIP's text tower never runs when scoring).

Last line: ``speedup <x>x, parameters <y>%``. Goal (issue 13): >= 20x and <= 5%.
Not part of the test run (pytest ignores tests/benchmarks).

A child that dies before it reports (killed for memory, a crash) ends the benchmark with an
error naming its exit code or signal; it never waits forever. ``--smoke`` runs both tiny
scorers at once on the CPU, one image, one forward each, in children forked from this process
(its imports reused: seconds, where two fresh interpreters take 10-20 s on 2 cores) and given
2 minutes to report (tests/test_benchmarks_smoke.py runs it).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue as queues
import resource
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

LLAVA_7B = {
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
               "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
               "projection_dim": 768},
    "text": {"vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
}  # fmt: skip
CLIP_L14_336 = LLAVA_7B["vision"]
QALIGN = (["excellent", "good", "fair", "poor", "bad"], [1.0, 0.75, 0.5, 0.25, 0.0])


def _random_init(model: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Materialise a meta-device model on ``device`` with N(0, 0.02) weights, unit norms."""
    model = model.to_empty(device=device).to(dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and "norm" in name:
                param.fill_(1.0)
            elif param.ndim == 1:
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=generator)
        for module in model.modules():  # computed buffers: position ids, rotary tables
            ids = getattr(module, "position_ids", None)
            if isinstance(ids, torch.Tensor):
                ids.copy_(torch.arange(ids.shape[-1], device=device).expand_as(ids))
            if isinstance(getattr(module, "inv_freq", None), torch.Tensor):
                fresh = type(module)(module.config)
                module.inv_freq = fresh.inv_freq.to(device)
                module.original_inv_freq = fresh.original_inv_freq.to(device)
    return model.eval()


def build_teacher(size: str, device: str):
    """The LMM scorer: an IQAModule (no prompt, Q-Align words) on a random LLaVA."""
    from iqa_lightning.models.backbones import LlavaBackbone, build_tiny_llava
    from iqa_lightning.models.backbones.tokenizer import build_tiny_tokenizer
    from iqa_lightning.models.prompts import NoPrompt
    from iqa_lightning.models.rali.clip import CLIP_MEAN, CLIP_STD
    from iqa_lightning.models.score import WordScore
    from iqa_lightning.module import IQAModule

    if size == "tiny":
        backbone = build_tiny_llava()
    else:
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
        from transformers import LlavaForConditionalGeneration as Llava

        tokenizer = build_tiny_tokenizer(kind="sentencepiece")
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(**LLAVA_7B["vision"]),
            text_config=LlamaConfig(**LLAVA_7B["text"], pad_token_id=tokenizer.pad_token_id),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            image_seq_length=(336 // 14) ** 2,
            vision_feature_layer=-2,
            projector_hidden_act="gelu",
        )
        with torch.device("meta"):
            model = Llava(config)
        model = _random_init(model, device, torch.bfloat16)
        backbone = LlavaBackbone(model, tokenizer, 336, CLIP_MEAN, CLIP_STD)
    words, weights = QALIGN
    phases = [{"name": "zero_shot", "trainable": []}]
    module = IQAModule(backbone, NoPrompt(), WordScore(words, weights), phases=phases)
    params = sum(p.numel() for p in backbone.model.parameters())
    dtype = str(next(backbone.model.parameters()).dtype).removeprefix("torch.")
    return module.to(device).eval(), backbone.image_size, params, dtype


def build_student(size: str, device: str, dtype: str):
    """RALI's scorer on a random CLIP image tower, PCA and basis of the paper's sizes."""
    from iqa_lightning.models.rali import RALIScorer, build_tiny_clip

    if size == "tiny":
        vision, dim, k = build_tiny_clip().model, 16, 20
    else:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        with torch.device("meta"):
            vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_L14_336))
        vision, dim, k = _random_init(vision, device, getattr(torch, dtype)), 512, 250
    g = torch.Generator().manual_seed(0)
    width = vision.config.projection_dim
    scorer = RALIScorer(
        vision.to(getattr(torch, dtype)),
        pca_mean=torch.randn(width, generator=g) * 0.1,
        pca_scale=torch.rand(width, generator=g) + 0.5,
        pca_components=torch.linalg.qr(torch.randn(width, dim, generator=g))[0].T,
        basis=torch.randn(k, dim, generator=g),
        basis_scores=torch.rand(k, generator=g),
    ).to(device)
    encoder = sum(p.numel() for p in scorer.encoder.parameters())
    head = sum(b.numel() for b in (scorer.pca_mean, scorer.pca_scale, scorer.pca_components))
    return scorer.eval(), scorer.image_size, encoder + head + scorer.basis.numel() + k


def _child(role: str, args: argparse.Namespace, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = args.device
    if role == "teacher":
        scorer, size, params, dtype = build_teacher(args.teacher_size, device)
    else:
        scorer, size, params = build_student(args.student_size, device, args.student_dtype)
        dtype = args.student_dtype
    images = torch.rand(args.batch, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    pixels = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear")
    pixels = pixels.clamp(0, 1).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        scores = scorer(pixels)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        for _ in range(args.reps):
            scores = scorer(pixels)
        sync()
        seconds = (time.perf_counter() - start) / args.reps
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB
    queue.put({"seconds": seconds, "peak_gib": peak, "params": params, "size": size,
               "mean_score": float(scores.float().mean()), "dtype": dtype})  # fmt: skip


def exit_cause(code: int | None) -> str:
    """What a child's exit code says: ``exit code 1``, ``killed by SIGKILL (...)``."""
    if code is None:
        return "still running"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = (
        " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
    )
    return f"killed by {name}{hint}"


def start(role: str, args: argparse.Namespace, target=None, context: str = "spawn"):
    """Start the child measuring ``role``; returns it and the queue it reports on."""
    ctx = mp.get_context(context)
    queue = ctx.Queue()
    child = ctx.Process(target=target or _child, args=(role, args, queue), name=f"bench-{role}")
    child.start()
    return child, queue


def collect(role: str, child, queue, poll: float = 0.5, timeout: float | None = None) -> dict:
    """The child's report; an error naming its exit cause when it dies without one.

    Args:
        timeout: Seconds to wait for the report (None: as long as the child lives).

    Raises:
        RuntimeError: The child died before reporting, failed after it, or gave no report
            within ``timeout``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            result = queue.get(timeout=poll)
            break
        except queues.Empty:
            if child.is_alive():
                if deadline is not None and time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the {role} benchmark process gave no report in {timeout:.0f} s"
                    ) from None
                continue
            try:  # it may have reported just before it ended
                result = queue.get(timeout=poll)
                break
            except queues.Empty:
                child.join()
                raise RuntimeError(
                    f"the {role} benchmark process died before it reported: "
                    f"{exit_cause(child.exitcode)}"
                ) from None
    child.join()
    if child.exitcode:
        raise RuntimeError(
            f"the {role} benchmark process failed after it reported: {exit_cause(child.exitcode)}"
        )
    return result


def measure(role: str, args: argparse.Namespace, target=None, context: str = "spawn") -> dict:
    """Run one scorer's measurement in its own process (see :func:`collect`)."""
    child, queue = start(role, args, target, context)
    try:
        return collect(role, child, queue)
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-size", choices=["tiny", "7b"], default="7b")
    parser.add_argument("--student-size", choices=["tiny", "l14_336"], default="l14_336")
    parser.add_argument("--student-dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on a GPU, 2 on CPU")
    parser.add_argument("--reps", type=int, default=3, help="timed forwards per scorer")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--smoke", action="store_true",
                        help="both tiny scorers at once on CPU, 1 image, 1 forward (seconds)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        args.teacher_size, args.student_size, args.device = "tiny", "tiny", "cpu"
        args.batch, args.reps, args.threads = 1, 1, 1
    args.batch = args.batch or (16 if args.device.startswith("cuda") else 2)
    print(f"torch {torch.__version__}, device {args.device}, batch {args.batch}, reps {args.reps}")
    if args.smoke:  # both children at once: their figures mean nothing, their running does
        children = {role: start(role, args, context="fork") for role in ("teacher", "student")}
        try:
            teacher, student = (collect(role, *children[role], timeout=120) for role in children)
        finally:
            for child, _ in children.values():
                if child.is_alive():
                    child.kill()
                    child.join()
    else:
        teacher, student = measure("teacher", args), measure("student", args)
    rows = {
        f"LMM scorer (LLaVA {args.teacher_size}, {teacher['dtype']})": teacher,
        f"RALI scorer (CLIP {args.student_size}, {student['dtype']})": student,
    }
    print(f"{'scorer':44s} {'input':>6s} {'img/s':>9s} {'peak GiB':>9s} {'parameters':>14s}")
    for name, r in rows.items():
        ips = args.batch / r["seconds"]
        print(f"{name:44s} {r['size']:6d} {ips:9.2f} {r['peak_gib']:9.2f} {r['params']:14,d}")
    speedup = teacher["seconds"] / student["seconds"]
    share = 100.0 * student["params"] / teacher["params"]
    memory = 100.0 * student["peak_gib"] / teacher["peak_gib"]
    print(f"time {100.0 / speedup:.1f}% and peak memory {memory:.1f}% of the LMM scorer's")
    print(f"speedup {speedup:.1f}x, parameters {share:.2f}%")
    return {"speedup": speedup, "parameters_percent": share, "memory_percent": memory}


if __name__ == "__main__":
    main()
